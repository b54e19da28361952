"""Stage I -> II -> III chained in one process, as configs/tiny.py -> tiny_stage2.py -> tiny_ift.py
chain them: Stage II starts from Stage I's final params with a fresh optimizer, and Stage III's
loss falls on assistant text only."""

import numpy as np
import pytest

from conftest import REPO_ROOT, tiny_test_config
from heph_jax.config import load_config_file
from heph_jax.data import forge
from heph_jax.data.pipeline import DataPipeline
from heph_jax.data.tokenizers import load_tokenizer
from heph_jax.training.metrics import read_metrics

SMALL = {"eval_batches": 0, "log_every_steps": 1, "checkpoint_every_steps": 0,
         "async_checkpointing": False}


def _stage_config(name, corpus, sources, init_from, steps):
  """configs/NAME.py with the test-sized model and data of conftest.tiny_test_config."""
  config = load_config_file(str(REPO_ROOT / "configs" / f"{name}.py"))
  small = tiny_test_config(corpus, **SMALL)
  for key in ("seq_len", "global_batch_size", "eval_batches", "log_every_steps",
              "checkpoint_every_steps", "async_checkpointing"):
    config[key] = small[key]
  config.model = small.model
  config.data.tokenizer = small.data.tokenizer
  config.data.shuffle_buffer = small.data.shuffle_buffer
  assert sorted(config.data.sources.keys()) == sorted(sources), "the stage config's sources changed"
  for task, path in sources.items():
    config.data.sources[task] = path
  config.init_from = init_from
  config.num_train_steps = steps
  return config


def _logged(workdir, key):
  return {r["step"]: r[key] for r in read_metrics(workdir) if key in r}


def _reference_loss(model_cfg, params, batch):
  """Weighted next-token cross-entropy in numpy from the model's logits."""
  from heph_jax.model import llama
  logits = np.asarray(llama.apply(model_cfg, params, batch["tokens"], batch["segment_ids"],
                                  batch["positions"]), np.float64)[:, :-1]
  logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
      - logits.max(-1, keepdims=True)
  target = batch["tokens"][:, 1:]
  seg = batch["segment_ids"]
  weight = ((seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0)) * batch["loss_weights"][:, 1:]
  token_loss = -np.take_along_axis(logp, target[..., None], -1)[..., 0]
  return float((token_loss * weight).sum() / weight.sum())


def _first_batch(config, workdir):
  tok = load_tokenizer(config.data.tokenizer)
  return next(DataPipeline(config, tok, str(workdir), log=lambda *_: None).train_iterator(8))


def _squash(text):
  return " ".join(text.replace("<s>", " ").replace("</s>", " ").split())


def _stretches(record):
  """Maximal runs of prompt text and of completion text of a rendered record."""
  out = []
  for text, completion in forge.render(record):
    if out and out[-1][1] == completion:
      out[-1][0] += text
    else:
      out.append([text, completion])
  return [(_squash(t), c) for t, c in out]


def _ift_sample(tmp_path, n=40):
  """The first n bundled IFT conversations (all of them would only take longer)."""
  records = forge.read_records(str(REPO_ROOT / "data" / "forge" / "ift.jsonl")).records[:n]
  path = tmp_path / "ift.jsonl"
  forge.write_records(str(path), records)
  return path, records


def _runs(weights):
  start = 0
  while start < len(weights):
    end = start
    while end < len(weights) and (weights[end] > 0) == (weights[start] > 0):
      end += 1
    yield start, end, weights[start] > 0
    start = end


def test_stage_configs_chain_on_the_bundled_data(monkeypatch):
  from heph_jax import config as config_lib
  monkeypatch.chdir(REPO_ROOT)  # the configs name repo-relative paths
  stage1, stage2, ift = (load_config_file(str(REPO_ROOT / "configs" / f"{n}.py"))
                         for n in ("tiny", "tiny_stage2", "tiny_ift"))
  for config in (stage1, stage2, ift):
    config_lib.validate(config, num_devices=8)
  assert stage2.init_from == "ckpt:runs/tiny" and ift.init_from == "ckpt:runs/tiny_stage2"
  assert sorted(stage2.data.sources.keys()) == ["tool_doc", "trajectory"]
  assert all(stage2.data.sources[t] == stage1.data.sources[t] for t in stage2.data.sources.keys())
  assert dict(ift.data.sources) == {"ift": "data/forge/ift.jsonl"}
  assert [c.data.loss_on for c in (stage1, stage2, ift)] == ["all", "all", "completions"]
  assert (ift.optimizer.learning_rate < stage2.optimizer.learning_rate
          < stage1.optimizer.learning_rate)
  assert stage1.model.to_dict() == stage2.model.to_dict() == ift.model.to_dict()


@pytest.mark.slow  # three compiled train runs: ~45 s of CPU
def test_stage_chain(tiny_corpus, tmp_path):
  import jax
  from heph_jax.train import train_and_evaluate
  from heph_jax.training.checkpoint import restore_params

  # ---- Stage I: the broad mix, from random init.
  stage1 = tmp_path / "stage1"
  train_and_evaluate(tiny_test_config(tiny_corpus, num_train_steps=3, **SMALL), str(stage1))

  # ---- Stage II: seed subset, init_from Stage I's workdir.
  stage2 = tmp_path / "stage2"
  seed_sources = {t: tiny_corpus["sources"][t] for t in ("tool_doc", "trajectory")}
  config2 = _stage_config("tiny_stage2", tiny_corpus, seed_sources, f"ckpt:{stage1}", steps=1)
  assert config2.optimizer.learning_rate < tiny_test_config(tiny_corpus).optimizer.learning_rate
  train_and_evaluate(config2, str(stage2))

  _, model_cfg, params1, step1 = restore_params(str(stage1))
  assert step1 == 3
  want = _reference_loss(model_cfg, params1, _first_batch(config2, stage2))
  assert _logged(stage2, "loss")[1] == pytest.approx(want, rel=1e-4)

  # Fresh optimizer: Stage II's one step leaves Adam's counts at 1 and its moments at their
  # first-step values, nu = (1 - b2) / (1 - b1)^2 * mu^2 (a carried-over state would not).
  import optax
  from heph_jax.parallel.mesh import make_mesh
  from heph_jax.training import build, checkpoint, state as state_lib
  program = build.build_train_step(config2, make_mesh(config2.mesh))
  manager = checkpoint.make_manager(str(stage2), 3, False)
  abstract = state_lib.abstract_state(program.model_cfg, program.tx, program.shardings)
  state = checkpoint.restore(manager, manager.latest_step(), abstract)
  manager.close()
  assert int(state["step"]) == 1
  counts = optax.tree_utils.tree_get_all_with_path(state["opt_state"], "count")
  assert counts and all(int(c) == 1 for _, c in counts)
  (_, mu), = optax.tree_utils.tree_get_all_with_path(state["opt_state"], "mu")
  (_, nu), = optax.tree_utils.tree_get_all_with_path(state["opt_state"], "nu")
  b1, b2 = config2.optimizer.b1, config2.optimizer.b2
  for m, v in zip(jax.tree.leaves(mu), jax.tree.leaves(nu)):
    m, v = np.asarray(m, np.float64), np.asarray(v, np.float64)
    np.testing.assert_allclose(v, (1 - b2) / (1 - b1) ** 2 * m ** 2, rtol=1e-4, atol=1e-30)

  # ---- Stage III: IFT on assistant turns, init_from Stage II's workdir.
  ift_path, _ = _ift_sample(tmp_path)
  stage3 = tmp_path / "stage3"
  config3 = _stage_config("tiny_ift", tiny_corpus, {"ift": str(ift_path)}, f"ckpt:{stage2}",
                          steps=1)
  assert config3.data.loss_on == "completions"
  train_and_evaluate(config3, str(stage3))
  _, _, params2, _ = restore_params(str(stage2))
  want3 = _reference_loss(model_cfg, params2, _first_batch(config3, stage3))
  assert _logged(stage3, "loss")[1] == pytest.approx(want3, rel=1e-4)


def test_ift_loss_falls_on_assistant_text_only(tiny_corpus, tmp_path):
  ift_path, records = _ift_sample(tmp_path)
  config = _stage_config("tiny_ift", tiny_corpus, {"ift": str(ift_path)}, "", steps=1)
  assert config.data.loss_on == "completions"
  # Every loss-weighted run of tokens in Stage III's batches is assistant text of a record, and
  # every unweighted run is prompt text. The first and last token of a run may straddle the
  # boundary (a straddling token is trained: it emits answer text), so they are left out.
  stretches = [s for r in records for s in _stretches(r)]
  tok = load_tokenizer(config.data.tokenizer)
  iterator = DataPipeline(config, tok, str(tmp_path), log=lambda *_: None).train_iterator(8)
  checked = {True: 0, False: 0}
  for _ in range(6):
    batch = next(iterator)
    for row in range(8):
      seg = batch["segment_ids"][row]
      for sid in np.unique(seg[seg > 0]):
        ids = batch["tokens"][row][seg == sid]
        weights = batch["loss_weights"][row][seg == sid]
        for start, end, weighted in _runs(weights):
          inner = _squash(tok.decode(ids[start + 1:end - 1]).strip("\ufffd"))
          if len(inner) < 4:
            continue
          assert any(inner in text for text, c in stretches if c == weighted), (weighted, inner)
          checked[weighted] += 1
  assert checked[True] >= 5 and checked[False] >= 5, checked
