"""Prompts: the tokenizer's chat template with tools (as transformers renders it), else forge-v1;
the parser reads back the calls each template writes for an assistant turn."""
import os
import pathlib
import sys

import pytest

from heph_jax.data import forge
from heph_jax.data.tokenizers import chat_template, load_tokenizer
from heph_jax.evaluate import data, parse, prompts
from heph_jax.model import decode

sys.path.insert(0, str(pathlib.Path(__file__).parent.parent / "fixtures" / "tokenizers"))
import tokenizer_builders  # pylint: disable=g-import-not-at-top,wrong-import-position

transformers = pytest.importorskip("transformers")
BFCL = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "bfcl")
ROOT = pathlib.Path(__file__).parent.parent.parent


@pytest.fixture(scope="module")
def question():
  return data.load(BFCL, ["simple"])[0]


@pytest.fixture(scope="module", params=["llama3", "mistral"])
def templated(request, tmp_path_factory):
  build = {"llama3": tokenizer_builders.build_llama3_style, "mistral": tokenizer_builders.build_mistral_style}
  return build[request.param](str(tmp_path_factory.mktemp(request.param)))


def _hf_tools(question):
  return [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                            "parameters": t["parameters"]}} for t in prompts.tools(question)]


def test_chat_template_prompt_equals_transformers(templated, question):
  hf = transformers.AutoTokenizer.from_pretrained(templated)
  expected = hf.apply_chat_template(question.messages, tools=_hf_tools(question), tokenize=False,
                                    add_generation_prompt=True)
  got = prompts.render_prompt(question, load_tokenizer("hf:" + templated))
  assert got == expected and "calculate_triangle_area" in got


def test_parser_reads_the_template_tool_call(templated, question):
  """The assistant turn the template writes for a reference call parses back to that call."""
  tok = load_tokenizer("hf:" + templated)
  call = {"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5}}
  messages = question.messages + [{"role": "assistant", "content": "", "tool_calls": [
      {"type": "function", "function": call}]}]
  pieces = chat_template.render_chat(messages, _hf_tools(question), tok)
  turn = "".join(text for text, assistant in pieces if assistant)
  text, _ = decode.truncate_at_stop(turn, prompts.stop_strings(tok))
  assert parse.parse_calls(text) == [call]
  assert prompts.stop_ids(tok) and tok.eos_id in prompts.stop_ids(tok)


def test_forge_prompt_without_a_template(question):
  tok = load_tokenizer("sp:" + str(ROOT / "data" / "tokenizer" / "tokenizer.model"))
  assert not getattr(tok, "chat_template", None)
  got = prompts.render_prompt(question, tok)
  tools_block = forge.render({"type": "trajectory", "tools": prompts.tools(question), "messages": []})[0][0]
  assert got == tools_block + "<|user|>\n" + question.messages[0]["content"] + "<|end|>\n<|assistant|>\n"
  assert '"type": "object"' in got  # BFCL's "dict" normalised as the converter writes it
  assert prompts.stop_strings(tok) == ["<|end|>"]


def _occurs(seq, ids):
  return any(tuple(ids[i:i + len(seq)]) == seq for i in range(len(ids) - len(seq) + 1))


def test_multi_token_stop_string_is_found_in_its_contexts():
  """forge-v1's "<|end|>" is several SentencePiece tokens whose split depends on what precedes it."""
  tok = load_tokenizer("sp:" + str(ROOT / "data" / "tokenizer" / "tokenizer.model"))
  assert tok.token_to_id("<|end|>") is None
  seqs = prompts.stop_sequences(tok)
  for text in ('<tool_call>{"name": "f", "arguments": {}}</tool_call><|end|>\n<|user|>\n',
               "The answer is 4.<|end|>\n", "no call<|end|>"):
    assert any(_occurs(s, tok.encode(text)) for s in seqs), text
  assert not any(_occurs(s, tok.encode("The end of the story | is near >")) for s in seqs)
