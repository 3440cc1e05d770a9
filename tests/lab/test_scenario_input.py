"""Malformed scenario files: the parser answers every one with a :class:`ScenarioError` (one line, naming
the file and the op), never another exception."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmalab.scenario import OP_FIELDS, Scenario, ScenarioError, load_scenario, parse_scenario

MUNMAP = {"op": "munmap", "addr": "base+0", "len": "4K"}


def write(tmp_path: Any, text: str, name: str = "s.json") -> str:
    p = os.path.join(str(tmp_path), name)
    with open(p, "w", encoding="utf-8") as f:
        f.write(text)
    return p


def scenario_text(*ops: object, name: str = "x") -> str:
    return json.dumps({"name": name, "ops": list(ops)})


MALFORMED = {
    "json_int_of_5000_digits": '{"name": "x", "ops": [{"op": "munmap", "addr": "base+0", "len": ' + "1" * 5000 + "}]}",
    "string_of_5000_digits": scenario_text({**MUNMAP, "len": "1" * 5000}),
    "hex_string_beyond_64_bits": scenario_text({**MUNMAP, "len": "0x1" + "0" * 16}),
    "address_of_5000_digits": scenario_text({**MUNMAP, "addr": "base+" + "9" * 5000}),
    "raw_fd_of_5000_digits": scenario_text({"op": "mmap", "addr": None, "len": "4K", "prot": 1, "flags": 2,
                                            "fd": "fd:" + "7" * 5000}),
    "nesting_for_a_recursion_error": '{"name": "x", "ops": [' + "[" * 100000 + "]" * 100000 + "]}",
    "nested_value_in_a_field": scenario_text({**MUNMAP, "len": json.loads("[" * 900 + "]" * 900)}),
    "leading_zero_size": scenario_text({**MUNMAP, "len": "08"}),
    "leading_zero_in_a_sum": scenario_text({**MUNMAP, "len": "4K+010"}),
    "list_as_op_name": scenario_text({**MUNMAP, "op": ["munmap"]}),
    "object_as_op_name": scenario_text({**MUNMAP, "op": {"munmap": 1}}),
    "list_as_body_op_name": scenario_text({"op": "repeat", "count": 2, "step": "4K", "body": {"op": [1]}}),
    "repeat_count_beyond_64_bits": scenario_text({"op": "repeat", "count": 1 << 64, "step": "4K", "body": MUNMAP}),
    "list_as_inject_point": json.dumps({"name": "x", "ops": [], "inject": [{"point": ["a"]}]}),
    "float_size": scenario_text({**MUNMAP, "len": 4096.0}),
    "json_nan": '{"name": "x", "ops": [{"op": "munmap", "addr": "base+0", "len": NaN}]}',
    "not_utf8": "{\"name\": \"\xff\"}",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_is_one_scenario_error_naming_file_and_op(tmp_path: Any, case: str) -> None:
    text = MALFORMED[case]
    path = write(tmp_path, text) if case != "not_utf8" else _write_bytes(tmp_path, b'{"name": "\xff"}')
    with pytest.raises(ScenarioError) as ei:
        load_scenario(path)
    msg = str(ei.value)
    assert msg.startswith(path + ": "), msg
    assert "\n" not in msg and len(msg) < 400, msg
    if '"ops": [{' in text and "nesting" not in case:
        assert ": op 0" in msg, msg


def _write_bytes(tmp_path: Any, data: bytes) -> str:
    p = os.path.join(str(tmp_path), "s.json")
    with open(p, "wb") as f:
        f.write(data)
    return p


def test_leading_zero_message_says_what_to_write() -> None:
    with pytest.raises(ScenarioError, match=r"op 0: munmap.len: .*'08'.*leading zero"):
        parse_scenario(json.loads(scenario_text({**MUNMAP, "len": "08"})))


def test_zero_and_hex_still_parse() -> None:
    scn = parse_scenario(json.loads(scenario_text({**MUNMAP, "len": "0"}, {**MUNMAP, "len": "00"},
                                                  {**MUNMAP, "len": "0x08"}, {**MUNMAP, "len": "0K+8"})))
    assert [op.p["len"] for op in scn.ops] == [0, 0, 8, 8]


def test_lone_surrogates_and_escapes_in_name_and_note_parse() -> None:
    """They are legal strings: the CLI escapes them when it prints (tests/lab/test_cli.py)."""
    raw = json.loads('{"name": "x\\ud800\\u001b[31m", "ops": [{"op": "vma_count", "note": "\\udc80\\u0007"}]}')
    scn = parse_scenario(raw)
    assert scn.name == "x\ud800\x1b[31m" and scn.ops[0].note == "\udc80\x07"


def test_repeat_count_bounds() -> None:
    """The live runner reads a repeat count as an unsigned 64-bit number: larger counts are refused."""
    ok = parse_scenario({"name": "x", "ops": [{"op": "repeat", "count": (1 << 64) - 1, "step": 0, "body": MUNMAP}]})
    assert ok.ops[0].p["count"] == (1 << 64) - 1
    with pytest.raises(ScenarioError, match="op 0: repeat.count"):
        parse_scenario({"name": "x", "ops": [{"op": "repeat", "count": 1 << 64, "step": 0, "body": MUNMAP}]})


# --- random JSON-ish input -----------------------------------------------------------------------------
_TEXT = st.text(alphabet=st.characters(codec=None, categories=None), max_size=12)
_SPECIAL = st.sampled_from([
    "08", "0x", "010", "1" * 5000, "0x" + "f" * 40, "base+08", "base+" + "1" * 5000, "fd:" + "9" * 5000,
    "map:", "map:x+", "mapend:[heap]-08", "abs:", "abs:0x1000", "brk+", "brk-1M", "unlimited", "-", "+",
    "memfd:a:08", "memfd:a:1" + "0" * 5000, "disk:a:4K:rw", "dev:", "dev:x:08", "PROT_READ|08", "\ud800",
    "MAP_PRIVATE|" + "9" * 5000, "1M-4K", "-0x10", "3P", " ", "", "\x00", "4K\n", "8K+", "4KK",
])
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-(1 << 70), max_value=1 << 70),
                     st.floats(allow_nan=True), _TEXT, _SPECIAL)
_JSONISH = st.recursive(_SCALARS, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                        st.dictionaries(_TEXT | _SPECIAL, kids, max_size=4)),
                        max_leaves=12)
_FIELDS = sorted({f for req, opt in OP_FIELDS.values() for f in req + opt} | {"note", "op", "bogus"})


@st.composite
def _ops(draw: st.DrawFn, depth: int = 0) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(_JSONISH)
    name = draw(st.sampled_from(sorted(OP_FIELDS)) | _JSONISH)
    op: dict[Any, Any] = {"op": name} if draw(st.integers(0, 9)) else {}
    req, opt = OP_FIELDS.get(name, ((), ())) if isinstance(name, str) else ((), ())
    for key in req + opt:
        if draw(st.integers(0, 5)):
            op[key] = draw(_JSONISH) if key != "body" or depth else draw(_ops(depth + 1))
    for key in draw(st.lists(st.sampled_from(_FIELDS), max_size=2)):
        op[key] = draw(_JSONISH)
    return op


@st.composite
def _scenarios(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 19)) == 0:
        return draw(_JSONISH)
    raw: dict[str, Any] = {"name": draw(st.just("x") | _JSONISH), "ops": draw(st.lists(_ops(), max_size=4))}
    for key in draw(st.lists(st.sampled_from(["window", "rlimit_stack", "description", "inject", "kernel_profile",
                                              "format", "bogus"]), max_size=2)):
        raw[key] = draw(_JSONISH)
    return raw


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scenarios())
def test_parser_raises_only_scenario_error(raw: Any) -> None:
    try:
        scn = parse_scenario(raw)
    except ScenarioError as e:
        assert "\n" not in str(e)
        return
    assert isinstance(scn, Scenario)
