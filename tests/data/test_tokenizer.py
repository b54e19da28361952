"""heph_jax.data.tokenizers against transformers.AutoTokenizer, on tokenizers built here.

Llama-3 style: a byte-level BPE tokenizer.json (tokenizers library). Mistral style: a
SentencePiece BPE tokenizer.model. Plus the bundled data/tokenizer. No downloads.
"""
import glob
import json
import os
import pathlib
import shutil
import sys
import sysconfig

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent.parent / "fixtures" / "tokenizers"))
import tokenizer_builders  # pylint: disable=g-import-not-at-top,wrong-import-position

from heph_jax.data import tokenizers as tokenizer_lib  # pylint: disable=wrong-import-position
from heph_jax.data.tokenizers import train as train_tokenizer  # pylint: disable=wrong-import-position

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="session")
def llama3_dir(tmp_path_factory):
  return tokenizer_builders.build_llama3_style(str(tmp_path_factory.mktemp("llama3_tok")))


@pytest.fixture(scope="session")
def mistral_dir(tmp_path_factory):
  return tokenizer_builders.build_mistral_style(str(tmp_path_factory.mktemp("mistral_tok")))


@pytest.fixture(scope="session")
def repo_tokenizer_dir(repo_root):
  return os.path.join(repo_root, "data", "tokenizer")


@pytest.fixture(scope="session")
def mistral_legacy_dir(mistral_dir, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("mistral_legacy"))
  for name in os.listdir(mistral_dir):
    shutil.copy(os.path.join(mistral_dir, name), out)
  path = os.path.join(out, "tokenizer_config.json")
  config = json.load(open(path, encoding="utf-8"))
  config["legacy"] = True
  json.dump(config, open(path, "w", encoding="utf-8"))
  return out


def _texts():
  """Non-ASCII, code, whitespace edge cases, special-token strings, and very long documents."""
  stdlib = sysconfig.get_paths()["stdlib"]
  code = [open(p, encoding="utf-8").read()
          for p in sorted(glob.glob(os.path.join(stdlib, "json", "*.py")))[:4]]
  long_doc = "\n\n".join(open(p, encoding="utf-8", errors="replace").read()
                         for p in sorted(glob.glob(os.path.join(stdlib, "email", "*.py"))))
  long_doc = long_doc[:250_000]
  assert len(long_doc) == 250_000
  edge = ["", " ", "  ", "x", " leading space", "   three leading", "\tTab\tseparated\t",
          "trailing   ", "a  b   c    d", "line\nbreaks\r\nand\rreturns\n\n\n", "    indented = 1",
          "def f(x):\n    return x  + 1\n\n\nclass A:\n\tpass\n", "▁literal meta ▁ symbol",
          "<s>starts with BOS</s> then text", "mid <s> and </s></s> and <unk>",
          "<|begin_of_text|>Llama <|eot_id|> tokens<|end_of_text|>", "ends with <s>",
          "unicode\u00a0nbsp\u2003em-space\u200bzero-width", "ＦＵＬＬ　ｗｉｄｔｈ ﬁ ligature",
          "🙂" * 50, "x" * 5000, "1234567890" * 30]
  return tokenizer_builders.MULTILINGUAL + edge + code + [long_doc]


def _assert_same_ids(ours, hf, texts):
  for text in texts:
    expected = hf(text, add_special_tokens=False)["input_ids"]
    assert ours.encode(text) == expected, f"ids differ for {text[:60]!r}"
    with_specials = hf(text)["input_ids"]
    assert ours.encode(text, add_special_tokens=True) == with_specials, text[:60]


def test_llama3_style_ids_match_transformers(llama3_dir):
  hf = transformers.AutoTokenizer.from_pretrained(llama3_dir)
  ours = tokenizer_lib.load_tokenizer("hf:" + llama3_dir)
  assert isinstance(ours, tokenizer_lib.HFJsonTokenizer)
  _assert_same_ids(ours, hf, _texts())
  assert ours.vocab_size == len(hf)


@pytest.mark.parametrize("which", ["mistral_dir", "mistral_legacy_dir"])
def test_mistral_style_ids_match_transformers(which, request):
  directory = request.getfixturevalue(which)
  hf = transformers.AutoTokenizer.from_pretrained(directory)
  ours = tokenizer_lib.load_tokenizer("hf:" + directory)
  assert isinstance(ours, tokenizer_lib.SentencePieceTokenizer)
  _assert_same_ids(ours, hf, _texts())
  assert ours.vocab_size == len(hf)


@pytest.mark.parametrize("legacy", [True, False])
def test_mistral_tokenizer_json_matches_transformers(legacy, mistral_dir, tmp_path):
  """A Mistral-7B-like directory: tokenizer.json with the 2023 converter's normalizer (prefix
  "▁" on every segment), tokenizer_class LlamaTokenizer; transformers 5 re-builds it."""
  directory = tmp_path / "mistral_json"
  transformers.AutoTokenizer.from_pretrained(mistral_dir).save_pretrained(str(directory))
  path = directory / "tokenizer.json"
  tok_json = json.loads(path.read_text(encoding="utf-8"))
  tok_json["normalizer"] = {"type": "Sequence", "normalizers": [
      {"type": "Prepend", "prepend": "\u2581"},
      {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
  tok_json["pre_tokenizer"] = None
  path.write_text(json.dumps(tok_json), encoding="utf-8")
  config_path = directory / "tokenizer_config.json"
  config = json.loads(config_path.read_text(encoding="utf-8"))
  assert config["tokenizer_class"] == "LlamaTokenizer"
  config.update(legacy=legacy, add_bos_token=True, add_eos_token=False)
  config_path.write_text(json.dumps(config), encoding="utf-8")
  hf = transformers.AutoTokenizer.from_pretrained(str(directory))
  ours = tokenizer_lib.load_tokenizer(f"hf:{directory}")
  assert isinstance(ours, tokenizer_lib.HFJsonTokenizer)
  _assert_same_ids(ours, hf, _texts())


def test_sp_spec_encodes_like_its_hf_directory(mistral_dir):
  """Equal but for texts that start with whitespace or "▁" (next test)."""
  by_file = tokenizer_lib.load_tokenizer("sp:" + os.path.join(mistral_dir, "tokenizer.model"))
  by_dir = tokenizer_lib.load_tokenizer("hf:" + mistral_dir)
  for text in _texts()[:40]:
    if not text[:1].isspace() and not text.startswith("\u2581"):
      assert by_file.encode(text) == by_dir.encode(text)


LEADING_WHITESPACE = [" leading space", "   three leading", "\tTab\tseparated\t", "\nnew line",
                      "\r\nCRLF first", "    indented = 1\n    more = 2\n", "\t\tdef f():\n\t\t\tpass",
                      "  \n  mixed", " ", "\n"]


@pytest.mark.parametrize("which", ["mistral_dir", "repo_tokenizer_dir"])
def test_sp_spec_is_sentencepiece_on_leading_whitespace(which, request):
  """sp:PATH gives SentencePiece's own ids (dummy prefix even before whitespace); the HF directory
  gives transformers' ids, which drop that prefix: both facts, and that they differ."""
  import sentencepiece as spm
  directory = request.getfixturevalue(which)
  model = os.path.join(directory, "tokenizer.model")
  sp = spm.SentencePieceProcessor(model_file=model)
  by_file = tokenizer_lib.load_tokenizer("sp:" + model)
  by_dir = tokenizer_lib.load_tokenizer("hf:" + directory)
  hf = transformers.AutoTokenizer.from_pretrained(directory)
  differ = 0
  for text in LEADING_WHITESPACE:
    assert by_file.encode(text) == sp.encode(text), repr(text)
    ids, offsets = by_file.encode_with_offsets(text)
    assert ids == sp.encode(text) and len(offsets) == len(ids) and offsets.max() <= len(text)
    assert by_dir.encode(text) == hf(text, add_special_tokens=False)["input_ids"], repr(text)
    differ += by_file.encode(text) != by_dir.encode(text)
  assert differ >= 3  # " x", "  two", indented code: SentencePiece keeps the prefix, HF does not


def test_bundled_tokenizer_matches_transformers(repo_root):
  directory = os.path.join(repo_root, "data", "tokenizer")
  assert os.path.getsize(os.path.join(directory, "tokenizer.model")) < 500_000
  hf = transformers.AutoTokenizer.from_pretrained(directory)
  ours = tokenizer_lib.load_tokenizer("hf:" + directory)
  assert ours.vocab_size == 2048  # configs/tiny.py's model.vocab_size
  assert (ours.unk_id, ours.bos_id, ours.eos_id) == (0, 1, 2)
  _assert_same_ids(ours, hf, _texts()[:40])


def test_sentencepiece_offsets_match_sentencepiece_proto(mistral_dir):
  """Our fast offsets (cumulative piece lengths) against sentencepiece's own begin/end bytes."""
  import sentencepiece as spm
  sp = spm.SentencePieceProcessor(model_file=os.path.join(mistral_dir, "tokenizer.model"))
  ours = tokenizer_lib.load_tokenizer("hf:" + mistral_dir)
  for text in tokenizer_builders.MULTILINGUAL + ["def f(x):\n    return 'ü' * 2\n", "a  b"]:
    proto = sp.encode(text, out_type="proto")  # dummy prefix added, as ours does at the start
    raw = text.encode("utf-8")
    expected = [(len(raw[:p.begin].decode("utf-8", "ignore")),
                 len(raw[:p.end].decode("utf-8", "ignore"))) for p in proto.pieces]
    ids, offsets = ours.encode_with_offsets(text)
    assert ids == [p.id for p in proto.pieces]
    assert [tuple(o) for o in offsets] == expected


def test_hf_offsets_cover_the_text(llama3_dir):
  ours = tokenizer_lib.load_tokenizer("hf:" + llama3_dir)
  hf = transformers.AutoTokenizer.from_pretrained(llama3_dir)
  text = tokenizer_builders.MULTILINGUAL[3] + " <|eot_id|> ok"
  ids, offsets = ours.encode_with_offsets(text)
  expected = hf(text, add_special_tokens=False, return_offsets_mapping=True)
  assert ids == expected["input_ids"]
  assert [tuple(o) for o in offsets] == [tuple(o) for o in expected["offset_mapping"]]


@pytest.mark.parametrize("which", ["llama3_dir", "mistral_dir"])
def test_encode_pieces_weights_follow_the_pieces(which, request):
  """Ids are transformers' ids of the whole text; weights follow the pieces' flags.

  Every piece ends with EOS, so transformers' ids split at EOS tell which piece a token is in.
  """
  directory = request.getfixturevalue(which)
  hf = transformers.AutoTokenizer.from_pretrained(directory)
  ours = tokenizer_lib.load_tokenizer("hf:" + directory)
  eos = ours.eos_token
  flags = [False, True, False, True]
  texts = ["Question: Wie spät ist es?", " Es ist 12:30 Uhr 😀.", "\nUnd morgen?", "Auch."]
  pieces = [(t + eos, f) for t, f in zip(texts, flags)]
  ids, weights = ours.encode_pieces(pieces, add_bos=True, add_eos=True)
  hf_ids = hf("".join(t for t, _ in pieces), add_special_tokens=False)["input_ids"]
  assert ids == [ours.bos_id] + hf_ids + [ours.eos_id]
  expected, piece = [0], 0
  for token in hf_ids:
    expected.append(int(flags[piece]))
    piece += token == ours.eos_id
  expected.append(1)  # the added EOS: weight of the last piece
  assert weights == expected
  if which == "llama3_dir":  # byte-level BPE never merges across these boundaries
    assert hf_ids == sum((hf(t, add_special_tokens=False)["input_ids"] for t, _ in pieces), [])


def test_encode_pieces_straddling_token_is_trained(llama3_dir):
  ours = tokenizer_lib.load_tokenizer("hf:" + llama3_dir)
  word = " return"  # one token in a tokenizer trained on Python sources
  assert len(ours.encode(word)) == 1
  for flags in ((False, True), (True, False)):
    ids, weights = ours.encode_pieces([(" ret", flags[0]), ("urn", flags[1])],
                                      add_bos=False, add_eos=False)
    assert ids == ours.encode(word) and weights == [1]
  ids, weights = ours.encode_pieces([(" ret", False), ("urn", False)], add_eos=True)
  assert weights == [0, 0, 0]


def test_bos_is_not_doubled_and_eos_weight(llama3_dir):
  ours = tokenizer_lib.load_tokenizer("hf:" + llama3_dir)
  ids, weights = ours.encode_pieces([("<|begin_of_text|>Hi", False), (" there", True)])
  assert ids.count(ours.bos_id) == 1 and ids[0] == ours.bos_id
  assert ids[-1] == ours.eos_id and weights[-1] == 1 and weights[0] == 0
  ids, weights = ours.encode_pieces([("Hi", True), (" there", False)], add_bos=False)
  assert ids[0] != ours.bos_id and weights[-1] == 0
  assert ours.encode_pieces([], add_bos=True, add_eos=True) == ([ours.bos_id, ours.eos_id], [0, 0])


def test_special_token_conventions(llama3_dir, mistral_dir):
  llama = tokenizer_lib.load_tokenizer("hf:" + llama3_dir)
  hf_llama = transformers.AutoTokenizer.from_pretrained(llama3_dir)
  assert (llama.bos_token, llama.eos_token) == ("<|begin_of_text|>", "<|end_of_text|>")
  assert (llama.bos_id, llama.eos_id) == (hf_llama.bos_token_id, hf_llama.eos_token_id)
  assert (llama.add_bos_default, llama.add_eos_default) == (True, False)  # from its post-processor
  assert llama.pad_id == llama.eos_id  # Llama-3 has no pad token
  assert llama.decode([0]) == "!"  # id 0 is a real token, as in Llama-3
  mistral = tokenizer_lib.load_tokenizer("hf:" + mistral_dir)
  hf_mistral = transformers.AutoTokenizer.from_pretrained(mistral_dir)
  assert (mistral.unk_id, mistral.bos_id, mistral.eos_id) == (0, 1, 2)
  assert (mistral.bos_token, mistral.eos_token) == ("<s>", "</s>")
  assert (mistral.bos_id, mistral.eos_id) == (hf_mistral.bos_token_id, hf_mistral.eos_token_id)
  assert mistral.pad_id == 2


def test_decode_round_trips(llama3_dir, mistral_dir):
  for directory in (llama3_dir, mistral_dir):
    ours = tokenizer_lib.load_tokenizer("hf:" + directory)
    hf = transformers.AutoTokenizer.from_pretrained(directory)
    for text in tokenizer_builders.MULTILINGUAL:
      ids = ours.encode(text)
      assert ours.decode(ids) == hf.decode(ids) == text


@pytest.mark.parametrize("which", ["llama3_dir", "mistral_dir", "bundled"])
def test_export_loads_in_transformers_and_encodes_like_training(which, request, tmp_path,
                                                                repo_root):
  if which == "bundled":  # a bare sp: model: the export writes the HF config itself
    model = tmp_path / "src" / "my.model"
    model.parent.mkdir()
    shutil.copy(os.path.join(repo_root, "data", "tokenizer", "tokenizer.model"), model)
    ours = tokenizer_lib.load_tokenizer(f"sp:{model}")
  else:
    ours = tokenizer_lib.load_tokenizer("hf:" + request.getfixturevalue(which))
  out = tmp_path / "export"
  written = ours.save_hf(str(out))
  assert all(os.path.isfile(p) for p in written)
  hf = transformers.AutoTokenizer.from_pretrained(str(out))
  for text in _texts()[:30]:
    if which == "bundled" and (text[:1].isspace() or text.startswith("\u2581")):
      # transformers' LlamaTokenizer drops SentencePiece's dummy prefix before leading whitespace;
      # sp: keeps it (test_sp_spec_is_sentencepiece_on_leading_whitespace). Documented limit.
      continue
    assert hf(text)["input_ids"] == ours.encode(text, add_special_tokens=True)
    assert hf(text, add_special_tokens=False)["input_ids"] == ours.encode(text)
  assert (hf.bos_token_id, hf.eos_token_id) == (ours.bos_id, ours.eos_id)
  reloaded = tokenizer_lib.load_tokenizer(f"hf:{out}")
  assert reloaded.encode(_texts()[-1]) == ours.encode(_texts()[-1])
  if ours.chat_template:
    assert hf.chat_template == ours.chat_template


def test_fingerprint_and_files(mistral_dir, tmp_path):
  copy = tmp_path / "tok"
  shutil.copytree(mistral_dir, copy)
  a = tokenizer_lib.load_tokenizer(f"hf:{copy}")
  assert a.fingerprint() == tokenizer_lib.load_tokenizer(f"hf:{mistral_dir}").fingerprint()
  assert sorted(os.path.basename(f) for f in a.files()) == [
      "special_tokens_map.json", "tokenizer.model", "tokenizer_config.json"]
  config = json.loads((copy / "tokenizer_config.json").read_text())
  config["legacy"] = True
  (copy / "tokenizer_config.json").write_text(json.dumps(config))
  assert tokenizer_lib.load_tokenizer(f"hf:{copy}").fingerprint() != a.fingerprint()


def test_relative_spec_resolves_against_cwd(repo_root, monkeypatch):
  monkeypatch.chdir(repo_root)
  tok = tokenizer_lib.load_tokenizer("sp:data/tokenizer/tokenizer.model")
  assert tok.name == "sp:data/tokenizer/tokenizer.model"
  assert tok.files() == [os.path.join(repo_root, "data", "tokenizer", "tokenizer.model")]


def test_load_errors_name_the_path(tmp_path):
  cases = {
      "nothing": "expected 'sp:PATH' or 'hf:DIR'",
      "xx:foo": "unknown kind 'xx'",
      "sp:": "names no path",
      f"sp:{tmp_path / 'missing.model'}": "missing.model",
      f"sp:{tmp_path}": "is a directory",
      f"hf:{tmp_path / 'nodir'}": "nodir",
      f"hf:{tmp_path}": "neither tokenizer.json nor tokenizer.model",
  }
  garbage = tmp_path / "garbage.model"
  garbage.write_bytes(b"\x00\x01not a model")
  cases[f"sp:{garbage}"] = "garbage.model"
  tiktoken = tmp_path / "tiktoken" / "tokenizer.model"
  tiktoken.parent.mkdir()
  tiktoken.write_text("IQ== 0\nIg== 1\n")
  cases[f"hf:{tiktoken.parent}"] = "tiktoken"
  bad_json = tmp_path / "badjson"
  bad_json.mkdir()
  (bad_json / "tokenizer.json").write_text("{not json")
  cases[f"hf:{bad_json}"] = "tokenizer.json"
  for spec, fragment in cases.items():
    with pytest.raises(tokenizer_lib.TokenizerError, match=None) as info:
      tokenizer_lib.load_tokenizer(spec)
    assert fragment in str(info.value), (spec, str(info.value))


def test_check_vocab_names_the_config_keys(repo_root):
  tok = tokenizer_lib.load_tokenizer(
      "sp:" + os.path.join(repo_root, "data", "tokenizer", "tokenizer.model"))
  tokenizer_lib.check_vocab(tok, tok.vocab_size, "model.vocab_size")
  tokenizer_lib.check_vocab(tok, tok.vocab_size + 96, "model.vocab_size")  # padded table
  with pytest.raises(ValueError, match=r"model.vocab_size=100 .*data.tokenizer"):
    tokenizer_lib.check_vocab(tok, 100, "model.vocab_size")


def test_tokenizer_spec_prefers_config_then_init_from():
  default = "sp:data/tokenizer/tokenizer.model"
  assert tokenizer_lib.tokenizer_spec(None, "hf:/m/llama3", default) == "hf:/m/llama3"
  assert tokenizer_lib.tokenizer_spec("sp:x.model", "hf:/m/llama3", default) == "sp:x.model"
  assert tokenizer_lib.tokenizer_spec(None, "/ckpt/step_100", default) == default


def test_train_tokenizer_cli(tmp_path):
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("\n".join(tokenizer_builders.corpus(300_000)), encoding="utf-8")
  out = tmp_path / "tok"
  assert train_tokenizer.main(["--input", str(corpus), "--output", str(out),
                               "--vocab_size", "800"]) == 0
  assert sorted(os.listdir(out)) == ["special_tokens_map.json", "tokenizer.model",
                                     "tokenizer_config.json"]
  tok = tokenizer_lib.load_tokenizer(f"sp:{out}/tokenizer.model")
  assert tok.vocab_size == 800
  unseen = "ꙮ ᚠᚢᚦ"  # not in the corpus: byte fallback, no <unk>
  assert tok.unk_id not in tok.encode(unseen) and tok.decode(tok.encode(unseen)) == unseen
  hf = transformers.AutoTokenizer.from_pretrained(str(out))
  text = "\n".join(tokenizer_builders.MULTILINGUAL)
  assert hf(text)["input_ids"] == tok.encode(text, add_special_tokens=True)
  again = tmp_path / "again"
  assert train_tokenizer.main(["--input", str(corpus), "--output", str(again),
                               "--vocab_size", "800"]) == 0
  assert (again / "tokenizer.model").read_bytes() == (out / "tokenizer.model").read_bytes()
  assert train_tokenizer.main(["--input", str(tmp_path / "none*.txt"), "--output",
                               str(out)]) == 2


def test_train_tokenizer_uses_forge_train_records_only(tmp_path):
  forge = pytest.importorskip("heph_jax.data.forge")
  records = [{"type": "text", "id": f"t{i}", "source": "test", "content": line}
             for i, line in enumerate(tokenizer_builders.corpus(200_000))]
  records.append({"type": "text", "id": "held_out", "source": "test", "split": "eval",
                  "content": "QQQZZZ held out QQQZZZ"})
  path = tmp_path / "forge.jsonl"
  forge.write_records(str(path), records)
  docs = list(train_tokenizer.iter_documents([str(path)]))
  assert len(docs) == len(records) - 1
  assert not any("QQQZZZ" in d for d in docs)


def test_measure_tokens_per_second(mistral_dir):
  tok = tokenizer_lib.load_tokenizer("hf:" + mistral_dir)
  texts = tokenizer_builders.MULTILINGUAL
  stats = tokenizer_lib.measure_tokens_per_second(tok, texts)
  assert stats["tokens"] == sum(len(tok.encode(t)) + 2 for t in texts)
  assert stats["tokens_per_s"] > 0 and stats["chars"] == sum(map(len, texts))
