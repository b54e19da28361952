"""BFCL questions as prompts: the tokenizer's chat template with tool schemas when it has one
(Llama-3.1 JSON tools, Mistral [AVAILABLE_TOOLS]), else the forge-v1 template the model was
trained on (heph_jax/data/forge/render.py), ending with the assistant header."""
from __future__ import annotations

from heph_jax.data.convert import bfcl
from heph_jax.data import forge
from heph_jax.data.tokenizers import chat_template

FORGE_STOP = forge.END.strip()  # "<|end|>": the end of the assistant turn


def tools(question) -> list[dict]:
  """BFCL function docs normalised as the converter does ("dict" -> "object", ...)."""
  return [bfcl._tool(fn, f"{question.id}: function[{i}]")  # pylint: disable=protected-access
          for i, fn in enumerate(question.functions)]


def _messages(question) -> list[dict]:
  return [{"role": m.get("role", "user"), "content": m.get("content", "")} for m in question.messages]


def render_prompt(question, tokenizer) -> str:
  specs = tools(question)
  if getattr(tokenizer, "chat_template", None):
    hf_tools = [{"type": "function", "function": {"name": t["name"], "description": t.get("description", ""),
                                                  "parameters": t.get("parameters", {})}} for t in specs]
    return chat_template.render_chat_string(_messages(question), hf_tools, tokenizer,
                                            add_generation_prompt=True)
  pieces = forge.render({"type": "trajectory", "tools": specs, "messages": _messages(question)})
  return "".join(text for text, _ in pieces) + "<|assistant|>\n"


def stop_strings(tokenizer) -> list[str]:
  if getattr(tokenizer, "chat_template", None):
    return [s for s in ("<|eot_id|>", "<|eom_id|>", "</s>", getattr(tokenizer, "eos_token", None)) if s]
  return [FORGE_STOP]


def stop_ids(tokenizer) -> tuple:
  ids = {tokenizer.eos_id} if tokenizer.eos_id is not None else set()
  for token in stop_strings(tokenizer):
    tid = tokenizer.token_to_id(token)
    if tid is not None:
      ids.add(tid)
  return tuple(sorted(ids))


def stop_sequences(tokenizer) -> tuple:
  """Token-id sequences for the stop strings that are not single tokens. A string's tokens depend
  on its neighbours (SentencePiece merges "><|" across "</tool_call><|end|>"), so it is encoded in a
  few contexts and each time the tokens that start inside it are kept: the output ending with any
  of them means the string was written (truncate_at_stop then cuts exactly)."""
  out = set()
  for text in stop_strings(tokenizer):
    if tokenizer.token_to_id(text) is not None:
      continue  # a single token: stop_ids covers it
    for left in ("", "}", ">", ")", ".", "a", "\n"):
      for right in ("", "\n", "<", "\n<|", "\n<|user|>\n"):
        ids, offsets = tokenizer.encode_with_offsets(left + text + right)
        inside = tuple(t for t, (start, _) in zip(ids, offsets) if len(left) <= start < len(left) + len(text))
        if inside:
          out.add(inside)
  return tuple(sorted(out))
