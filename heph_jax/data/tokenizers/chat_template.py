"""Renders conversations with the base model's own chat template, assistant spans marked.

    pieces = render_chat(messages, tools, tok)   # [(text, is_assistant), ...]
    ids, weights = tok.encode_pieces(pieces, add_bos=True, add_eos=True)

The rendered string equals `transformers` `tokenizer.apply_chat_template(messages, tools=tools,
tokenize=False)`: the template runs in a Jinja sandbox set up the same way (trim_blocks,
lstrip_blocks, loop controls, a `tojson` that keeps non-ASCII, `raise_exception`,
`strftime_now`) and receives the tokenizer's named special tokens (bos_token, eos_token, ...).

Which characters are the assistant's (the loss mask):
- a template with `{% generation %}...{% endgeneration %}` blocks marks them itself;
- otherwise the text of assistant message i is what rendering messages[:i+1] adds to rendering
  messages[:i] with the generation prompt (so the assistant header stays prompt). In the whole
  conversation it sits at the same place when the template is prefix-stable (Llama-3.x), and is
  searched for after the previous turn otherwise (Mistral moves [AVAILABLE_TOOLS] to the last user
  turn). A template that renders a turn differently once later turns exist (e.g. one that drops
  earlier reasoning) raises ChatTemplateError: give it {% generation %} blocks.

`render_record(record, tok)` is what data preparation calls: Forge trajectories and IFT samples
go through the tokenizer's chat template when it has one (Forge tool calls become the
`tool_calls` / `tools=` function schemas of transformers), and through the Forge template
("forge-v1", heph_jax.data.forge) otherwise.
"""
from __future__ import annotations

import datetime
import functools
import json
import os
import re
from typing import Any, Sequence
from heph_jax.errors import HephError

_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


class ChatTemplateError(HephError, ValueError):
  """A conversation or template that cannot be rendered; the message says why."""


@functools.lru_cache(maxsize=32)
def _compile(source: str):
  import jinja2  # pylint: disable=g-import-not-at-top
  from jinja2 import ext, nodes  # pylint: disable=g-import-not-at-top
  from jinja2.sandbox import ImmutableSandboxedEnvironment  # pylint: disable=g-import-not-at-top

  class GenerationSpans(ext.Extension):
    """`{% generation %}` blocks: records the [start, end) of their output in the render."""
    tags = {"generation"}

    def __init__(self, environment):
      super().__init__(environment)
      environment.extend(span_recorder=None)

    def parse(self, parser):
      lineno = next(parser.stream).lineno
      body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
      return nodes.CallBlock(self.call_method("_record", []), [], [], body).set_lineno(lineno)

    def _record(self, caller):
      text = caller()
      recorder = self.environment.span_recorder
      if recorder is not None:
        recorder(text)
      return text

  def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

  def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)

  def strftime_now(fmt):
    return datetime.datetime.now().strftime(fmt)

  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                      extensions=[GenerationSpans, ext.loopcontrols])
  env.filters["tojson"] = tojson
  env.globals["raise_exception"] = raise_exception
  env.globals["strftime_now"] = strftime_now
  try:
    return env.from_string(source)
  except jinja2.exceptions.TemplateSyntaxError as e:
    raise ChatTemplateError(f"chat template: Jinja syntax error at line {e.lineno}: "
                            f"{e.message}") from None


def _plain(value: Any) -> Any:
  """JSON-like copy without None-valued message keys (transformers drops them too)."""
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  return value


def _template_and_tokens(template, tools) -> tuple[str, dict[str, str]]:
  """(Jinja source, named special tokens) from a Tokenizer, an HF directory or a source."""
  from heph_jax.data import tokenizers as tokenizer_lib  # pylint: disable=g-import-not-at-top
  special: dict[str, str] = {}
  if isinstance(template, tokenizer_lib.Tokenizer):
    special = template.special_tokens_map()
    where, template = template.name, template.chat_template
  elif isinstance(template, str) and ("{" not in template and os.path.isdir(template)):
    tok = tokenizer_lib.load_tokenizer("hf:" + template)
    special = tok.special_tokens_map()
    where, template = tok.name, tok.chat_template
  else:
    where = "chat template"
  if isinstance(template, dict):  # named templates, chosen as transformers chooses
    name = "tool_use" if tools is not None and "tool_use" in template else "default"
    if name not in template:
      raise ChatTemplateError(f"{where}: several chat templates ({', '.join(sorted(template))}) "
                              "and none named 'default'")
    template = template[name]
  if not isinstance(template, str) or not template:
    raise ChatTemplateError(f"{where}: has no chat template")
  return template, special


def render_chat_string(messages: Sequence[dict], tools: Sequence[dict] | None = None,
                       template=None, add_generation_prompt: bool = False,
                       **template_kwargs) -> str:
  """The rendered conversation, as `apply_chat_template(..., tokenize=False)` returns it."""
  source, special = _template_and_tokens(template, tools)
  return _render(source, {**special, **template_kwargs}, messages, tools, add_generation_prompt)


def _render(source: str, variables: dict, messages, tools, add_generation_prompt: bool,
            recorder=None) -> str:
  import jinja2  # pylint: disable=g-import-not-at-top
  compiled = _compile(source)
  messages = [{k: _plain(v) for k, v in m.items() if v is not None} for m in messages]
  env = compiled.environment
  try:
    if recorder is None:
      return compiled.render(messages=messages, tools=_plain(tools), documents=None,
                             add_generation_prompt=add_generation_prompt, **variables)
    out: list[str] = []
    env.span_recorder = lambda text: recorder(sum(len(b) for b in out), text)
    try:
      for block in compiled.generate(messages=messages, tools=_plain(tools), documents=None,
                                     add_generation_prompt=add_generation_prompt, **variables):
        out.append(block)
    finally:
      env.span_recorder = None
    return "".join(out)
  except jinja2.exceptions.TemplateError as e:
    raise ChatTemplateError(f"chat template failed: {e}") from None


def _pieces_from_spans(text: str, spans: Sequence[tuple[int, int]]) -> list[tuple[str, bool]]:
  pieces, pos = [], 0
  for start, end in sorted(spans):
    start = max(start, pos)
    if start > pos:
      pieces.append((text[pos:start], False))
    if end > start:
      pieces.append((text[start:end], True))
    pos = max(pos, end)
  if pos < len(text):
    pieces.append((text[pos:], False))
  return pieces


def _common_prefix(a: str, b: str) -> int:
  n = min(len(a), len(b))
  i = 0
  while i < n and a[i] == b[i]:
    i += 1
  return i


def render_chat(messages: Sequence[dict], tools: Sequence[dict] | None = None, template=None,
                **template_kwargs) -> list[tuple[str, bool]]:
  """Renders the conversation into pieces; True on the assistant turns (see module doc).

  `template`: a heph_jax Tokenizer, an HF tokenizer directory, or a Jinja source (then pass the
  special tokens it uses, e.g. bos_token="<s>", as keyword arguments).
  """
  source, special = _template_and_tokens(template, tools)
  variables = {**special, **template_kwargs}
  if _GENERATION_TAG.search(source):
    spans: list[tuple[int, int]] = []
    text = _render(source, variables, messages, tools, False,
                   recorder=lambda at, chunk: spans.append((at, at + len(chunk))))
    return _pieces_from_spans(text, spans)
  text = _render(source, variables, messages, tools, False)
  spans = []
  for i, message in enumerate(messages):
    if message.get("role") != "assistant":
      continue
    before = _render(source, variables, messages[:i], tools, True) if i else ""
    upto = _render(source, variables, messages[:i + 1], tools, False)
    start = _common_prefix(before, upto)
    turn = upto[start:]
    at = start if text.startswith(upto) else text.find(turn, spans[-1][1] if spans else 0)
    if at < 0 or not turn:
      raise ChatTemplateError(
          f"chat template: cannot find the text of assistant messages[{i}] in the rendered "
          "conversation (the template renders it differently once later turns are added); "
          "add {% generation %} blocks to the template")
    spans.append((at, at + len(turn)))
  return _pieces_from_spans(text, spans)


def forge_to_hf(record: dict) -> tuple[list[dict], list[dict] | None]:
  """A Forge trajectory/ift record as transformers chat messages and function-tool schemas."""
  messages = []
  for msg in record["messages"]:
    out = {"role": msg["role"], "content": msg.get("content", "")}
    if msg.get("tool_calls"):
      out["tool_calls"] = []
      for call in msg["tool_calls"]:
        hf_call = {"type": "function",
                   "function": {"name": call["name"], "arguments": call["arguments"]}}
        if call.get("id"):
          hf_call["id"] = call["id"]
        out["tool_calls"].append(hf_call)
    for key in ("name", "tool_call_id"):
      if msg.get(key):
        out[key] = msg[key]
    messages.append(out)
  tools = [{"type": "function",
            "function": {"name": t["name"], "description": t.get("description", ""),
                         "parameters": t.get("parameters", {"type": "object", "properties": {}})}}
           for t in record.get("tools") or []]
  return messages, (tools or None)


def render_record(record: dict, tokenizer) -> list[tuple[str, bool]]:
  """Pieces of one Forge record: the tokenizer's chat template for conversations when it has
  one, the Forge template otherwise (and always for tool_doc, code and text records)."""
  from heph_jax.data import forge  # pylint: disable=g-import-not-at-top
  if record.get("type") in ("trajectory", "ift") and getattr(tokenizer, "chat_template", None):
    messages, tools = forge_to_hf(record)
    try:
      return render_chat(messages, tools, tokenizer)
    except ChatTemplateError as e:
      raise ChatTemplateError(f"record {record.get('id')!r}: {e}") from None
  return forge.render(record)
