"""The allow-list of safe, pure functions that simulated trajectories really call.

Each `SimTool` names a standard-library function (or a two-line composition of
them), its JSON Schema, a seeded argument sampler, question templates and an
answer template. Only these functions are ever executed by the harvester.
"""
from __future__ import annotations

import base64
import calendar
import cmath
import colorsys
import dataclasses
import datetime
import decimal
import difflib
import fractions
import hashlib
import heapq
import html
import inspect
import ipaddress
import json
import math
import random
import re
import shlex
import statistics
import string
import textwrap
import unicodedata
import urllib.parse
from typing import Any, Callable

Args = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class SimTool:
  name: str
  fn: Callable[[Args], Any]           # runs the real function on JSON arguments
  params: dict                        # JSON Schema properties
  required: tuple[str, ...]
  sample: Callable[[random.Random], Args]
  asks: tuple[str, ...]               # str.format templates over the arguments
  tell: Callable[[Args, Any], str]    # final answer from arguments and result
  purpose: str                        # "to ..." phrase for the assistant's plan
  doc_of: Any = None                  # the real callable whose docstring describes it
  description: str = ""
  bad_sample: Callable[[random.Random], Args] | None = None  # arguments that raise

  def spec(self) -> dict:
    desc = self.description
    if not desc and self.doc_of is not None:
      desc = (inspect.getdoc(self.doc_of) or "").strip().split("\n\n")[0].replace("\n", " ")
    return {"name": self.name, "description": desc,
            "parameters": {"type": "object", "properties": self.params,
                           "required": list(self.required)}}


def fmt(value: Any) -> str:
  """Human formatting of a result inside answers."""
  if isinstance(value, bool):
    return "yes" if value else "no"
  if isinstance(value, float):
    return f"{value:.6g}"
  if isinstance(value, (list, tuple)):
    return ", ".join(fmt(v) for v in value)
  return str(value)


def to_json(value: Any) -> Any:
  """Results as JSON values: tuples -> lists, exotic numbers -> strings."""
  if isinstance(value, (list, tuple)):
    return [to_json(v) for v in value]
  if isinstance(value, dict):
    return {str(k): to_json(v) for k, v in value.items()}
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  return str(value)


WORDS = ("apple", "banana", "cherry", "grape", "lemon", "mango", "orange", "peach", "pear",
         "plum", "apricot", "melon", "papaya", "kiwi", "lime", "guava", "fig", "date")
SENTENCES = (
    "the quick brown fox jumps over the lazy dog",
    "pack my box with five dozen liquor jugs",
    "a journey of a thousand miles begins with a single step",
    "all that glitters is not gold",
    "the early bird catches the worm but the second mouse gets the cheese",
    "knowledge is power and power corrupts so study hard and be evil",
    "every tool call returns an observation that the agent must read carefully",
    "simple is better than complex and complex is better than complicated",
    "readability counts and special cases are not special enough to break the rules",
    "jax transforms numerical functions with grad jit vmap and pmap",
)
DOMAINS = ("example.com", "docs.python.org", "api.weather.test", "shop.example.org")
PATTERNS = {r"\d+": "numbers", r"\b[A-Z][a-z]+\b": "capitalized words",
            r"[\w.]+@[\w.]+": "email addresses", r"#\w+": "hashtags"}
CHARS = "aAzZ0!?&€ßéλπ∑→☃"
UNICODE_NAMES = ("GREEK SMALL LETTER ALPHA", "SNOWMAN", "EURO SIGN", "BLACK HEART SUIT",
                 "LATIN SMALL LETTER SHARP S", "RIGHTWARDS ARROW", "INFINITY")


def _ints(rng, k, lo, hi):
  return [rng.randint(lo, hi) for _ in range(k)]


def _data(rng, k_lo=4, k_hi=9):
  return [rng.randint(1, 99) for _ in range(rng.randint(k_lo, k_hi))]


def _sentence(rng):
  return rng.choice(SENTENCES)


def _date(rng):
  return datetime.date(rng.randint(1990, 2035), rng.randint(1, 12), rng.randint(1, 28)).isoformat()


def _gcd_sample(rng):
  base = rng.choice([2, 3, 4, 6, 7, 12, 15])
  return {"integers": [base * x for x in _ints(rng, rng.randint(2, 3), 2, 40)]}


def _add_days(a):
  return (datetime.date.fromisoformat(a["date"]) + datetime.timedelta(days=a["days"])).isoformat()


def _days_between(a):
  return (datetime.date.fromisoformat(a["end"]) - datetime.date.fromisoformat(a["start"])).days


def _round_half_up(a):
  q = decimal.Decimal(1).scaleb(-a["places"])
  return str(decimal.Decimal(a["value"]).quantize(q, rounding=decimal.ROUND_HALF_UP))


def _ip_info(a):
  net = ipaddress.ip_network(a["cidr"], strict=False)
  return {"network": str(net.network_address), "netmask": str(net.netmask),
          "broadcast": str(net.broadcast_address), "num_addresses": net.num_addresses}


def _url_parts(a):
  parts = urllib.parse.urlparse(a["url"])
  return {"scheme": parts.scheme, "host": parts.hostname, "path": parts.path,
          "query": dict(urllib.parse.parse_qsl(parts.query))}


def _url(rng):
  q = urllib.parse.urlencode({"q": rng.choice(WORDS), "page": rng.randint(1, 9)})
  return f"https://{rng.choice(DOMAINS)}/{rng.choice(WORDS)}/{rng.randint(1, 999)}?{q}"


def _cidr(rng):
  return f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}/{rng.randint(20, 30)}"


def _rgb(rng):
  return {"r": round(rng.random(), 2), "g": round(rng.random(), 2), "b": round(rng.random(), 2)}


def _weekday_name(i):
  return calendar.day_name[i]


def _seq(*xs):
  return " ".join(str(x) for x in xs)


S = {"type": "string"}
I = {"type": "integer"}
N = {"type": "number"}
INTS = {"type": "array", "items": I}
NUMS = {"type": "array", "items": N}


def _p(schema, description, **extra):
  return dict(schema, description=description, **extra)


TOOLS: tuple[SimTool, ...] = (
    SimTool("math.gcd", lambda a: math.gcd(*a["integers"]),
            {"integers": _p(INTS, "Integers whose greatest common divisor is wanted.")},
            ("integers",), _gcd_sample,
            ("What is the greatest common divisor of {integers_text}?",
             "Find the GCD of {integers_text}."),
            lambda a, r: f"The greatest common divisor of {fmt(a['integers'])} is {r}.",
            "to compute the greatest common divisor", doc_of=math.gcd),
    SimTool("math.lcm", lambda a: math.lcm(*a["integers"]),
            {"integers": _p(INTS, "Integers whose least common multiple is wanted.")},
            ("integers",), lambda rng: {"integers": _ints(rng, rng.randint(2, 3), 2, 30)},
            ("What is the least common multiple of {integers_text}?",
             "Compute the LCM of {integers_text}."),
            lambda a, r: f"The least common multiple of {fmt(a['integers'])} is {r}.",
            "to compute the least common multiple", doc_of=math.lcm),
    SimTool("math.comb", lambda a: math.comb(a["n"], a["k"]),
            {"n": _p(I, "Number of items."), "k": _p(I, "Number of items chosen.")},
            ("n", "k"), lambda rng: (lambda n: {"n": n, "k": rng.randint(1, n)})(rng.randint(4, 40)),
            ("How many ways are there to choose {k} items from {n}?",
             "In how many ways can a committee of {k} be picked from {n} people?"),
            lambda a, r: f"There are {r:,} ways to choose {a['k']} items from {a['n']}.",
            "to count the combinations", doc_of=math.comb),
    SimTool("math.factorial", lambda a: math.factorial(a["n"]),
            {"n": _p(I, "A non-negative integer.")}, ("n",),
            lambda rng: {"n": rng.randint(0, 20)},
            ("What is {n} factorial?", "Compute {n}!"),
            lambda a, r: f"{a['n']}! = {r:,}.", "to compute the factorial", doc_of=math.factorial,
            bad_sample=lambda rng: {"n": -rng.randint(1, 9)}),
    SimTool("math.hypot", lambda a: math.hypot(*a["coordinates"]),
            {"coordinates": _p(NUMS, "Coordinates of the point (or triangle legs).")},
            ("coordinates",), lambda rng: {"coordinates": _ints(rng, 2, 1, 60)},
            ("A right triangle has legs {coordinates_text}. How long is the hypotenuse?",
             "What is the distance from the origin to the point ({coordinates_text})?"),
            lambda a, r: f"The length is {fmt(r)}.", "to compute the Euclidean norm",
            doc_of=math.hypot),
    SimTool("math.sqrt", lambda a: math.sqrt(a["x"]), {"x": _p(N, "The number.")}, ("x",),
            lambda rng: {"x": rng.choice([rng.randint(1, 400), round(rng.uniform(0.5, 900), 2)])},
            ("What is the square root of {x}?", "Compute sqrt({x})."),
            lambda a, r: f"The square root of {a['x']} is {fmt(r)}.", "to take the square root",
            doc_of=math.sqrt, bad_sample=lambda rng: {"x": -rng.randint(1, 400)}),
    SimTool("cmath.sqrt", lambda a: cmath.sqrt(a["x"]), {"x": _p(N, "The number (may be negative).")},
            ("x",), lambda rng: {"x": -rng.randint(1, 400)},
            ("What is the complex square root of {x}?",),
            lambda a, r: f"The square root of {a['x']} is {r}.", "to take the complex square root",
            doc_of=cmath.sqrt),
    SimTool("math.log", lambda a: math.log(a["x"], a["base"]),
            {"x": _p(N, "A positive number."), "base": _p(N, "The logarithm base.")}, ("x", "base"),
            lambda rng: {"x": rng.choice([8, 81, 1000, 1024, 50, 7, 2.5]), "base": rng.choice([2, 3, 10])},
            ("What is log base {base} of {x}?", "Compute the base-{base} logarithm of {x}."),
            lambda a, r: f"log base {a['base']} of {a['x']} is {fmt(r)}.", "to take the logarithm",
            doc_of=math.log, bad_sample=lambda rng: {"x": 0, "base": 10}),
    SimTool("math.dist", lambda a: math.dist(a["p"], a["q"]),
            {"p": _p(NUMS, "First point."), "q": _p(NUMS, "Second point.")}, ("p", "q"),
            lambda rng: (lambda d: {"p": _ints(rng, d, -20, 20), "q": _ints(rng, d, -20, 20)})(rng.randint(2, 3)),
            ("How far apart are the points {p} and {q}?",),
            lambda a, r: f"The distance between {a['p']} and {a['q']} is {fmt(r)}.",
            "to compute the distance", doc_of=math.dist),
    SimTool("statistics.mean", lambda a: statistics.mean(a["data"]),
            {"data": _p(NUMS, "The sample.")}, ("data",), lambda rng: {"data": _data(rng)},
            ("What is the average of {data_text}?", "Compute the mean of these values: {data_text}."),
            lambda a, r: f"The mean is {fmt(r)}.", "to compute the mean", doc_of=statistics.mean,
            bad_sample=lambda rng: {"data": []}),
    SimTool("statistics.median", lambda a: statistics.median(a["data"]),
            {"data": _p(NUMS, "The sample.")}, ("data",), lambda rng: {"data": _data(rng)},
            ("What is the median of {data_text}?",),
            lambda a, r: f"The median is {fmt(r)}.", "to compute the median", doc_of=statistics.median),
    SimTool("statistics.stdev", lambda a: statistics.stdev(a["data"]),
            {"data": _p(NUMS, "The sample (at least two values).")}, ("data",),
            lambda rng: {"data": _data(rng)},
            ("What is the sample standard deviation of {data_text}?",),
            lambda a, r: f"The sample standard deviation is {fmt(r)}.",
            "to compute the standard deviation", doc_of=statistics.stdev,
            bad_sample=lambda rng: {"data": [rng.randint(1, 99)]}),
    SimTool("statistics.correlation", lambda a: statistics.correlation(a["x"], a["y"]),
            {"x": _p(NUMS, "First variable."), "y": _p(NUMS, "Second variable.")}, ("x", "y"),
            lambda rng: (lambda k: {"x": _ints(rng, k, 1, 50), "y": _ints(rng, k, 1, 50)})(rng.randint(4, 7)),
            ("What is Pearson's correlation between {x} and {y}?",),
            lambda a, r: f"The correlation coefficient is {fmt(r)}.", "to compute the correlation",
            doc_of=statistics.correlation),
    SimTool("str.title", lambda a: a["text"].title(), {"text": _p(S, "The text.")}, ("text",),
            lambda rng: {"text": _sentence(rng)},
            ("Convert '{text}' to title case.",),
            lambda a, r: f"In title case: {r}", "to title-case the text", doc_of=str.title),
    SimTool("str.count", lambda a: a["text"].count(a["sub"]),
            {"text": _p(S, "The text."), "sub": _p(S, "The substring to count.")}, ("text", "sub"),
            lambda rng: {"text": _sentence(rng), "sub": rng.choice(["e", "o", "th", "a", " "])},
            ("How many times does '{sub}' occur in '{text}'?",),
            lambda a, r: f"'{a['sub']}' occurs {r} times.", "to count the occurrences", doc_of=str.count),
    SimTool("str.replace", lambda a: a["text"].replace(a["old"], a["new"]),
            {"text": _p(S, "The text."), "old": _p(S, "Substring to replace."),
             "new": _p(S, "Replacement.")}, ("text", "old", "new"),
            lambda rng: (lambda t: {"text": t, "old": rng.choice(t.split()), "new": rng.choice(WORDS)})(_sentence(rng)),
            ("In '{text}', replace '{old}' with '{new}'.",),
            lambda a, r: f"Result: {r}", "to replace the substring", doc_of=str.replace),
    SimTool("textwrap.shorten", lambda a: textwrap.shorten(a["text"], width=a["width"]),
            {"text": _p(S, "The text."), "width": _p(I, "Maximum width.")}, ("text", "width"),
            lambda rng: {"text": _sentence(rng), "width": rng.randint(15, 35)},
            ("Shorten '{text}' to at most {width} characters.",),
            lambda a, r: f"Shortened: {r}", "to shorten the text", doc_of=textwrap.shorten),
    SimTool("textwrap.wrap", lambda a: textwrap.wrap(a["text"], width=a["width"]),
            {"text": _p(S, "The text."), "width": _p(I, "Line width.")}, ("text", "width"),
            lambda rng: {"text": _sentence(rng), "width": rng.randint(10, 25)},
            ("Wrap '{text}' into lines of at most {width} characters.",),
            lambda a, r: "Wrapped lines:\n" + "\n".join(r), "to wrap the text", doc_of=textwrap.wrap),
    SimTool("string.capwords", lambda a: string.capwords(a["s"]), {"s": _p(S, "The text.")}, ("s",),
            lambda rng: {"s": _sentence(rng)}, ("Capitalize each word of '{s}'.",),
            lambda a, r: f"Capitalized: {r}", "to capitalize the words", doc_of=string.capwords),
    SimTool("json.dumps", lambda a: json.dumps(a["obj"], sort_keys=a.get("sort_keys", False)),
            {"obj": _p({"type": "object"}, "The object to serialize."),
             "sort_keys": _p({"type": "boolean"}, "Sort keys.", default=False)}, ("obj",),
            lambda rng: {"obj": {w: rng.randint(0, 9) for w in rng.sample(WORDS, 3)}, "sort_keys": True},
            ("Serialize {obj} to JSON with sorted keys.",),
            lambda a, r: f"JSON: {r}", "to serialize the object", doc_of=json.dumps),
    SimTool("calendar.isleap", lambda a: calendar.isleap(a["year"]), {"year": _p(I, "The year.")},
            ("year",), lambda rng: {"year": rng.choice([1900, 2000, 2024, 2023, rng.randint(1600, 2400)])},
            ("Is {year} a leap year?",),
            lambda a, r: f"{a['year']} is {'a' if r else 'not a'} leap year.", "to check the year",
            doc_of=calendar.isleap),
    SimTool("calendar.monthrange", lambda a: calendar.monthrange(a["year"], a["month"]),
            {"year": _p(I, "The year."), "month": _p(I, "The month, 1-12.")}, ("year", "month"),
            lambda rng: {"year": rng.randint(1990, 2035), "month": rng.randint(1, 12)},
            ("How many days are in month {month} of {year}, and on which weekday does it start?",),
            lambda a, r: f"Month {a['month']} of {a['year']} has {r[1]} days and starts on a {_weekday_name(r[0])}.",
            "to look up the month", doc_of=calendar.monthrange,
            bad_sample=lambda rng: {"year": 2024, "month": 13}),
    SimTool("calendar.weekday", lambda a: calendar.weekday(a["year"], a["month"], a["day"]),
            {"year": _p(I, "The year."), "month": _p(I, "The month."), "day": _p(I, "The day.")},
            ("year", "month", "day"),
            lambda rng: {"year": rng.randint(1990, 2035), "month": rng.randint(1, 12), "day": rng.randint(1, 28)},
            ("What day of the week is {year}-{month:02d}-{day:02d}?",),
            lambda a, r: f"It is a {_weekday_name(r)}.", "to find the weekday", doc_of=calendar.weekday,
            bad_sample=lambda rng: {"year": 2023, "month": 2, "day": 30}),
    SimTool("date_add_days", _add_days,
            {"date": _p(S, "ISO date YYYY-MM-DD."), "days": _p(I, "Days to add (may be negative).")},
            ("date", "days"), lambda rng: {"date": _date(rng), "days": rng.randint(-400, 400)},
            ("What date is {days} days after {date}?",),
            lambda a, r: f"{a['days']} days after {a['date']} is {r}.", "to do the date arithmetic",
            description="Adds a number of days to an ISO date (datetime.date + datetime.timedelta).",
            bad_sample=lambda rng: {"date": "2023-02-30", "days": 1}),
    SimTool("date_days_between", _days_between,
            {"start": _p(S, "ISO start date."), "end": _p(S, "ISO end date.")}, ("start", "end"),
            lambda rng: {"start": _date(rng), "end": _date(rng)},
            ("How many days are there from {start} to {end}?",),
            lambda a, r: f"There are {r} days from {a['start']} to {a['end']}.", "to count the days",
            description="Days from start to end (datetime.date subtraction)."),
    SimTool("colorsys.rgb_to_hsv", lambda a: colorsys.rgb_to_hsv(a["r"], a["g"], a["b"]),
            {"r": _p(N, "Red, 0-1."), "g": _p(N, "Green, 0-1."), "b": _p(N, "Blue, 0-1.")},
            ("r", "g", "b"), _rgb, ("Convert the RGB color ({r}, {g}, {b}) to HSV.",),
            lambda a, r: f"HSV = ({fmt(r)}).", "to convert the color",
            description="Convert an RGB color (components in 0-1) to HSV (colorsys.rgb_to_hsv)."),
    SimTool("fractions.Fraction", lambda a: str(fractions.Fraction(a["numerator"], a["denominator"])),
            {"numerator": _p(I, "Numerator."), "denominator": _p(I, "Denominator.")},
            ("numerator", "denominator"),
            lambda rng: (lambda k: {"numerator": k * rng.randint(1, 12), "denominator": k * rng.randint(2, 12)})(rng.randint(2, 9)),
            ("Simplify the fraction {numerator}/{denominator}.",),
            lambda a, r: f"{a['numerator']}/{a['denominator']} simplifies to {r}.",
            "to reduce the fraction", doc_of=fractions.Fraction,
            bad_sample=lambda rng: {"numerator": rng.randint(1, 9), "denominator": 0}),
    SimTool("decimal_round_half_up", _round_half_up,
            {"value": _p(S, "Decimal number as text."), "places": _p(I, "Decimal places.")},
            ("value", "places"),
            lambda rng: {"value": f"{rng.randint(0, 999)}.{rng.randint(0, 99999):05d}", "places": rng.randint(0, 3)},
            ("Round {value} to {places} decimal places, rounding halves up.",),
            lambda a, r: f"{a['value']} rounded to {a['places']} places is {r}.", "to round exactly",
            description="Round a decimal string with ROUND_HALF_UP (decimal.Decimal.quantize)."),
    SimTool("difflib.get_close_matches",
            lambda a: difflib.get_close_matches(a["word"], a["possibilities"], n=a.get("n", 3)),
            {"word": _p(S, "Word to match."), "possibilities": _p({"type": "array", "items": S}, "Candidates."),
             "n": _p(I, "Maximum matches.", default=3)}, ("word", "possibilities"),
            lambda rng: (lambda w: {"word": w[:-1] + rng.choice("aeiouxy"), "possibilities": rng.sample(WORDS, 8) + [w], "n": 2})(rng.choice(WORDS)),
            ("Which of {possibilities} are closest to the misspelled word '{word}'?",),
            lambda a, r: f"Closest matches: {fmt(r) or 'none'}.", "to find close matches",
            doc_of=difflib.get_close_matches),
    SimTool("unicodedata.name", lambda a: unicodedata.name(a["chr"]), {"chr": _p(S, "One character.")},
            ("chr",), lambda rng: {"chr": rng.choice(CHARS)}, ("What is the Unicode name of '{chr}'?",),
            lambda a, r: f"'{a['chr']}' is {r}.", "to look up the character", doc_of=unicodedata.name),
    SimTool("unicodedata.lookup", lambda a: unicodedata.lookup(a["name"]), {"name": _p(S, "Unicode name.")},
            ("name",), lambda rng: {"name": rng.choice(UNICODE_NAMES)},
            ("Which character is called {name}?",),
            lambda a, r: f"{a['name']} is '{r}'.", "to look up the name", doc_of=unicodedata.lookup,
            bad_sample=lambda rng: {"name": "LATIN CAPITAL LETTER " + rng.choice(WORDS).upper()}),
    SimTool("urllib.parse.urlparse", _url_parts, {"url": _p(S, "The URL.")}, ("url",),
            lambda rng: {"url": _url(rng)}, ("Break down the URL {url} into its parts.",),
            lambda a, r: f"Scheme {r['scheme']}, host {r['host']}, path {r['path']}, query {r['query']}.",
            "to parse the URL", doc_of=urllib.parse.urlparse),
    SimTool("html.escape", lambda a: html.escape(a["s"]), {"s": _p(S, "Text to escape.")}, ("s",),
            lambda rng: {"s": f"<b>{rng.choice(WORDS)} & {rng.choice(WORDS)}</b> \"{rng.randint(1, 9)}\""},
            ("HTML-escape this text: {s}",), lambda a, r: f"Escaped: {r}", "to escape the text",
            doc_of=html.escape),
    SimTool("base64_encode_text", lambda a: base64.b64encode(a["text"].encode()).decode(),
            {"text": _p(S, "Text (UTF-8).")}, ("text",), lambda rng: {"text": " ".join(rng.sample(WORDS, 3))},
            ("Base64-encode '{text}'.",), lambda a, r: f"Base64: {r}", "to encode the text",
            description="Base64-encode UTF-8 text (base64.b64encode)."),
    SimTool("sha256_hex", lambda a: hashlib.sha256(a["text"].encode()).hexdigest(),
            {"text": _p(S, "Text (UTF-8).")}, ("text",), lambda rng: {"text": rng.choice(SENTENCES)},
            ("What is the SHA-256 hex digest of '{text}'?",), lambda a, r: f"SHA-256: {r}",
            "to hash the text", description="SHA-256 hex digest of UTF-8 text (hashlib.sha256)."),
    SimTool("shlex.split", lambda a: shlex.split(a["s"]), {"s": _p(S, "A shell-like command line.")},
            ("s",), lambda rng: {"s": f"grep -n \"{rng.choice(WORDS)} {rng.choice(WORDS)}\" notes.txt --max-count {rng.randint(1, 9)}"},
            ("Split this command line into arguments: {s}",), lambda a, r: f"Arguments: {r}",
            "to split the command line", doc_of=shlex.split,
            bad_sample=lambda rng: {"s": f"echo \"{rng.choice(WORDS)}"}),
    SimTool("ip_network_info", _ip_info, {"cidr": _p(S, "Network in CIDR notation.")}, ("cidr",),
            lambda rng: {"cidr": _cidr(rng)}, ("Describe the network {cidr}.",),
            lambda a, r: (f"Network {r['network']} with netmask {r['netmask']}, broadcast {r['broadcast']}, "
                          f"{r['num_addresses']} addresses."), "to inspect the network",
            description="Network address, netmask, broadcast and size of a CIDR block (ipaddress.ip_network).",
            bad_sample=lambda rng: {"cidr": f"10.0.0.{rng.randint(256, 999)}/24"}),
    SimTool("heapq.nlargest", lambda a: heapq.nlargest(a["n"], a["iterable"]),
            {"n": _p(I, "How many."), "iterable": _p(NUMS, "The values.")}, ("n", "iterable"),
            lambda rng: {"n": rng.randint(1, 3), "iterable": _data(rng, 5, 10)},
            ("What are the {n} largest values in {iterable}?",),
            lambda a, r: f"The {a['n']} largest values are {fmt(r)}.", "to find the largest values",
            doc_of=heapq.nlargest),
    SimTool("int_from_base", lambda a: int(a["string"], a["base"]),
            {"string": _p(S, "Digits."), "base": _p(I, "Base, 2-36.")}, ("string", "base"),
            lambda rng: (lambda b, v: {"string": {2: bin, 8: oct, 16: hex}[b](v)[2:], "base": b})(rng.choice([2, 8, 16]), rng.randint(5, 5000)),
            ("What is {string} in base {base} as a decimal number?",),
            lambda a, r: f"{a['string']} in base {a['base']} is {r}.", "to convert the number",
            description="Parse an integer written in the given base (int(string, base)).",
            bad_sample=lambda rng: {"string": "12" + rng.choice("29"), "base": 2}),
    SimTool("re.findall", lambda a: re.findall(a["pattern"], a["string"]),
            {"pattern": _p(S, "Regular expression."), "string": _p(S, "Text to search.")},
            ("pattern", "string"),
            lambda rng: (lambda p: {"pattern": p, "string": f"Order {rng.randint(10, 999)} for Ana Lee (ana@{rng.choice(DOMAINS)}) ships in {rng.randint(2, 9)} days #{rng.choice(WORDS)}"})(rng.choice(list(PATTERNS))),
            ("Find all matches of the pattern {pattern} in: {string}",),
            lambda a, r: f"Matches: {fmt(r) or 'none'}.", "to search the text", doc_of=re.findall),
    SimTool("round", lambda a: round(a["number"], a.get("ndigits", 0)),
            {"number": _p(N, "The number."), "ndigits": _p(I, "Digits after the point.", default=0)},
            ("number",), lambda rng: {"number": round(rng.uniform(-500, 500), 5), "ndigits": rng.randint(0, 3)},
            ("Round {number} to {ndigits} digits.",), lambda a, r: f"Rounded: {r}.", "to round the number",
            doc_of=round),
)

TOOLS_BY_NAME = {t.name: t for t in TOOLS}


def question_fields(args: Args) -> dict:
  """Template fields: every argument plus "<name>_text" renderings of lists."""
  fields = dict(args)
  for k, v in args.items():
    if isinstance(v, list):
      fields[f"{k}_text"] = ", ".join(str(x) for x in v[:-1]) + f" and {v[-1]}" if len(v) > 1 else str(v[0]) if v else ""
  return fields
