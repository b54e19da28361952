"""Chat-template rendering against transformers' apply_chat_template (tokenizers built here)."""
import json
import os
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent.parent / "fixtures" / "tokenizers"))
import tokenizer_builders  # pylint: disable=g-import-not-at-top,wrong-import-position

from heph_jax.data.tokenizers import chat_template  # pylint: disable=wrong-import-position
from heph_jax.data import tokenizers as tokenizer_lib  # pylint: disable=wrong-import-position

transformers = pytest.importorskip("transformers")

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name, e.g. Zürich"},
        "unit": {"type": "string", "enum": ["c", "f"]}}, "required": ["city"]}}}]

# Two user turns; the first answer is a tool call, then its result and the final answer.
CONVERSATION = [
    {"role": "system", "content": "You are a weather assistant."},
    {"role": "user", "content": "Wie ist das Wetter in Zürich?"},
    {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
        "name": "get_weather", "arguments": {"city": "Zürich", "unit": "c"}}}]},
    {"role": "tool", "name": "get_weather", "content": "{\"temp\": 21, \"sky\": \"☀\"}"},
    {"role": "assistant", "content": "In Zürich sind es 21 °C und sonnig."},
    {"role": "user", "content": "Danke! Und morgen? 😀"},
    {"role": "assistant", "content": "Morgen wird es regnen."},
]

EXPECTED_ASSISTANT_TEXT = {
    "llama3": ['{"name": "get_weather", "parameters": {"city": "Zürich", "unit": "c"}}<|eom_id|>',
               "In Zürich sind es 21 °C und sonnig.<|eot_id|>",
               "Morgen wird es regnen.<|eot_id|>"],
    "mistral": ['[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Zürich", '
                '"unit": "c"}}]</s>', " In Zürich sind es 21 °C und sonnig.</s>",
                " Morgen wird es regnen.</s>"],
}


@pytest.fixture(scope="module")
def tokenizer_dirs(tmp_path_factory):
  return {
      "llama3": tokenizer_builders.build_llama3_style(str(tmp_path_factory.mktemp("l3"))),
      "mistral": tokenizer_builders.build_mistral_style(str(tmp_path_factory.mktemp("mi"))),
  }


def _conversation(style):
  # Mistral-style templates have no system role.
  return CONVERSATION if style == "llama3" else CONVERSATION[1:]


@pytest.mark.parametrize("style", ["llama3", "mistral"])
def test_render_equals_apply_chat_template(style, tokenizer_dirs):
  directory = tokenizer_dirs[style]
  hf = transformers.AutoTokenizer.from_pretrained(directory)
  tok = tokenizer_lib.load_tokenizer("hf:" + directory)
  messages = _conversation(style)
  expected = hf.apply_chat_template(messages, tools=TOOLS, tokenize=False)
  pieces = chat_template.render_chat(messages, TOOLS, tok)
  assert "".join(text for text, _ in pieces) == expected
  assert chat_template.render_chat_string(messages, TOOLS, directory) == expected
  assert [text for text, assistant in pieces if assistant] == EXPECTED_ASSISTANT_TEXT[style]
  # Without tools the template renders differently, still as transformers does.
  no_tools = [m for m in messages if m["role"] != "tool" and "tool_calls" not in m]
  assert (chat_template.render_chat_string(no_tools, None, tok)
          == hf.apply_chat_template(no_tools, tokenize=False))
  with_prompt = hf.apply_chat_template(messages[:2], tools=TOOLS, tokenize=False,
                                       add_generation_prompt=True)
  assert chat_template.render_chat_string(messages[:2], TOOLS, tok,
                                          add_generation_prompt=True) == with_prompt


@pytest.mark.parametrize("style", ["llama3", "mistral"])
def test_loss_mask_is_exactly_the_assistant_tokens(style, tokenizer_dirs):
  """Reference: transformers' assistant mask from the same template with {% generation %}."""
  directory = tokenizer_dirs[style]
  hf = transformers.AutoTokenizer.from_pretrained(directory)
  tok = tokenizer_lib.load_tokenizer("hf:" + directory)
  messages = _conversation(style)
  marked = tokenizer_builders.chat_template(style, with_generation=True)
  reference = hf.apply_chat_template(messages, tools=TOOLS, chat_template=marked, tokenize=True,
                                     return_dict=True, return_assistant_tokens_mask=True)
  pieces = chat_template.render_chat(messages, TOOLS, tok)  # the template without markers
  ids, weights = tok.encode_pieces(pieces, add_bos=False, add_eos=False)
  assert ids == reference["input_ids"]
  assert weights == reference["assistant_masks"]
  assert 0 < sum(weights) < len(weights)
  # Our {% generation %} support gives the same pieces.
  assert chat_template.render_chat(messages, TOOLS, marked, **tok.special_tokens_map()) == pieces
  # As a training sample: BOS is already rendered by the template, EOS gets the last turn's 1.
  ids2, weights2 = tok.encode_pieces(pieces, add_bos=True, add_eos=True)
  assert ids2 == ids + [tok.eos_id] and weights2 == weights + [1]


def test_template_that_rewrites_history_is_refused():
  # Renders every earlier assistant turn as "(earlier)": the spans cannot be found.
  source = ("{% for m in messages %}{% if m.role == 'assistant' and not loop.last %}(earlier)"
            "{% else %}<{{ m.role }}>{{ m.content }}{% endif %}{% endfor %}")
  messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
              {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]
  with pytest.raises(chat_template.ChatTemplateError, match=r"messages\[1\].*generation"):
    chat_template.render_chat(messages, None, source)


def test_named_templates_pick_tool_use_with_tools(tmp_path, tokenizer_dirs):
  directory = tmp_path / "named"
  directory.mkdir()
  for name in os.listdir(tokenizer_dirs["llama3"]):
    (directory / name).write_bytes((pathlib.Path(tokenizer_dirs["llama3"]) / name).read_bytes())
  config = json.loads((directory / "tokenizer_config.json").read_text())
  config["chat_template"] = [{"name": "default", "template": "{{ 'plain' }}"},
                             {"name": "tool_use", "template": config["chat_template"]}]
  (directory / "tokenizer_config.json").write_text(json.dumps(config))
  hf = transformers.AutoTokenizer.from_pretrained(str(directory))
  tok = tokenizer_lib.load_tokenizer(f"hf:{directory}")
  for tools in (TOOLS, None):
    assert (chat_template.render_chat_string(CONVERSATION, tools, tok)
            == hf.apply_chat_template(CONVERSATION, tools=tools, tokenize=False))


def test_bad_template_errors_are_clear(tokenizer_dirs, repo_root):
  with pytest.raises(chat_template.ChatTemplateError, match="syntax error"):
    chat_template.render_chat(CONVERSATION, None, "{% for m in messages %}")
  with pytest.raises(chat_template.ChatTemplateError, match="Only user, assistant and tool"):
    chat_template.render_chat(CONVERSATION, None, tokenizer_dirs["mistral"])  # system role
  bundled = tokenizer_lib.load_tokenizer(f"sp:{repo_root}/data/tokenizer/tokenizer.model")
  with pytest.raises(chat_template.ChatTemplateError, match="has no chat template"):
    chat_template.render_chat(CONVERSATION, None, bundled)


FORGE_TRAJECTORY = {
    "type": "trajectory", "id": "t1", "source": "test", "split": "train",
    "tools": [{"name": "get_weather", "description": "Current weather for a city.",
               "parameters": {"type": "object",
                              "properties": {"city": {"type": "string"}},
                              "required": ["city"]}}],
    "messages": [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]},
        {"role": "tool", "name": "get_weather", "content": "{\"temp\": -3}"},
        {"role": "assistant", "content": "It is -3 °C in Oslo."}],
}


def test_forge_records_use_the_chat_template_when_there_is_one(tokenizer_dirs, repo_root):
  forge = pytest.importorskip("heph_jax.data.forge")
  record = forge.validate(FORGE_TRAJECTORY)
  directory = tokenizer_dirs["llama3"]
  tok = tokenizer_lib.load_tokenizer("hf:" + directory)
  hf = transformers.AutoTokenizer.from_pretrained(directory)
  pieces = chat_template.render_record(record, tok)
  hf_messages = [
      {"role": "user", "content": "Weather in Oslo?"},
      {"role": "assistant", "content": "", "tool_calls": [
          {"type": "function", "function": {"name": "get_weather",
                                            "arguments": {"city": "Oslo"}}}]},
      {"role": "tool", "name": "get_weather", "content": "{\"temp\": -3}"},
      {"role": "assistant", "content": "It is -3 °C in Oslo."}]
  hf_tools = [{"type": "function", "function": record["tools"][0]}]
  assert "".join(t for t, _ in pieces) == hf.apply_chat_template(
      hf_messages, tools=hf_tools, tokenize=False)
  assert [t for t, done in pieces if done] == [
      '{"name": "get_weather", "parameters": {"city": "Oslo"}}<|eom_id|>',
      "It is -3 °C in Oslo.<|eot_id|>"]
  # No template (the bundled tokenizer): the Forge template, and always for non-chat records.
  bundled = tokenizer_lib.load_tokenizer(f"sp:{repo_root}/data/tokenizer/tokenizer.model")
  assert chat_template.render_record(record, bundled) == forge.render(record)
  text = forge.validate({"type": "text", "id": "x", "source": "t", "content": "Hello"})
  assert chat_template.render_record(text, tok) == forge.render(text)
