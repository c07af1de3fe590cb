"""${var} expansion, API calls, globals and regex captures."""
import pytest

from firmware.switch.db import Db
from firmware.switch.expand import ApiRegistry, expand, substitute_captures

VARS = {"caller_id_number": "1001", "uuid": "u-1", "name": "caller_id_number", "empty": ""}
GLOBALS = {"domain": "earshot.local", "uuid": "global-uuid-loses"}


@pytest.fixture
def apis():
    db = Db(":memory:")
    db.insert("spymap", "1001", "u-target")
    reg = ApiRegistry()
    reg.register("db", lambda args, ch: db.api(args))
    reg.register("upper", lambda args, ch: args.upper())
    reg.register("boom", lambda args, ch: 1 / 0)
    yield reg
    db.close()


@pytest.mark.parametrize("text,want", [
    ("plain", "plain"),
    ("${caller_id_number}", "1001"),
    ("a${caller_id_number}b${uuid}c", "a1001bu-1c"),
    ("${unknown}", ""),
    ("${empty}x", "x"),
    ("${domain}", "earshot.local"),                     # a global as fallback
    ("${uuid}", "u-1"),                                 # the channel wins over a global
    ("$${domain}", "earshot.local"),
    ("$${caller_id_number}", ""),                       # $${} reads globals only
    ("${${name}}", "1001"),                             # nested name
    ("${db(select/spymap/1001)}", "u-target"),
    ("${db(select/spymap/${caller_id_number})}", "u-target"),
    ("${db(select/spymap/9999)}", ""),
    ("${upper(${caller_id_number}x)}", "1001X"),
    ("${nosuchapi(x)}", ""),
    ("${boom(x)}", ""),                                 # a failing API gives "", never an exception
    ("cost $5", "cost $5"),                             # a bare $ stays
    ("^88(.*)$", "^88(.*)$"),
    ("${unterminated", "${unterminated"),
    ("x${caller_id_number", "x${caller_id_number"),
    ("{a=b}", "{a=b}"),
])
def test_expand(apis, text, want):
    assert expand(text, VARS, apis, GLOBALS) == want


def test_lookup_may_be_a_function(apis):
    assert expand("${x}-${y}", lambda n: {"x": "1"}.get(n), apis) == "1-"


def test_depth_is_bounded():
    text = "${" * 40 + "x" + "}" * 40
    with pytest.raises(ValueError):
        expand(text, {})


@pytest.mark.parametrize("data,groups,want", [
    ("${db(select/spymap/$1$2)}", ("881001", "1001", None), "${db(select/spymap/1001)}"),
    ("${db(select/spymap/$1$2)}", ("*01001", None, "1001"), "${db(select/spymap/1001)}"),
    ("user/$1", ("1002", "1002"), "user/1002"),
    ("$0", ("whole",), "whole"),
    ("$3", ("a", "b"), ""),                            # beyond the groups: empty
    ("no captures", ("a",), "no captures"),
    ("${var}", ("a",), "${var}"),
])
def test_substitute_captures(data, groups, want):
    assert substitute_captures(data, groups) == want


from hypothesis import given, strategies as st  # noqa: E402


@given(st.text(alphabet=st.characters(blacklist_characters="$"), max_size=80))
def test_text_without_dollar_is_unchanged(text):
    assert expand(text, VARS) == text


@given(st.text(alphabet="${}()ab/\\", max_size=48))
def test_expand_never_raises_on_shallow_junk(text):
    # any mix of the syntax characters expands to a string (48 characters cannot nest deeper than the limit of 16)
    assert isinstance(expand(text, VARS, ApiRegistry(), GLOBALS), str)
