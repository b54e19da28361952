"""Hephaestus-Forge records: the one import the data pipeline needs.

    from heph_jax.data import forge
    result = forge.read_records("data/forge/tool_doc.jsonl")   # validated records
    for rec in result.records:
      pieces = forge.render(rec)       # [(text, is_completion), ...]

Record types (schema in forge_schema.py): tool_doc, trajectory, code, text, ift.
Every record has "type", "id", "source" and "split" ("train" or "eval"); eval
records (BFCL questions) must never be trained on: `is_train(rec)` says which.

Rendering template "forge-v1" (details and golden examples in forge_render.py):
text and code render as their content; a tool_doc renders as a "Tool: / Signature: /
Description: / Parameters: / Returns: / Examples:" card; trajectories and ift
samples render as a chat transcript

    <|tools|>\\n{tool JSON per line}<|end|>\\n
    <|user|>\\n{content}<|end|>\\n
    <|assistant|>\\n{content}\\n<tool_call>{"name": ..., "arguments": {...}}</tool_call><|end|>\\n
    <|tool:{name}|>\\n{observation}<|end|>\\n
    <|assistant|>\\n{final answer}<|end|>\\n

where assistant bodies are completion pieces (the IFT loss falls on them only).
Importing this module needs no TensorFlow.
"""
from heph_jax.data.forge.render import (END, TEMPLATE_VERSION, format_call, prompt_completion,
                                        render, render_text)
from heph_jax.data.forge.schema import (JSON_SCHEMA_TYPES, RECORD_TYPES, ROLES, SPLITS,
                                        ForgeDataError, json_schema_type, normalize_schema,
                                        validate, validate_schema)
from heph_jax.data.forge.io import (DEFAULT_MAX_RECORD_BYTES, ON_ERROR_CHOICES, ReadResult,
                                 ReadStats, iter_json_objects, iter_records, read_records,
                                 write_records)


def is_train(record: dict) -> bool:
  """True for records a training mixture may use (split "train")."""
  return record.get("split", "train") == "train"


__all__ = [
    "END", "TEMPLATE_VERSION", "format_call", "prompt_completion", "render", "render_text",
    "JSON_SCHEMA_TYPES", "RECORD_TYPES", "ROLES", "SPLITS", "ForgeDataError",
    "json_schema_type", "normalize_schema", "validate", "validate_schema",
    "DEFAULT_MAX_RECORD_BYTES", "ON_ERROR_CHOICES", "ReadResult", "ReadStats",
    "iter_json_objects", "iter_records", "read_records", "write_records", "is_train",
]
