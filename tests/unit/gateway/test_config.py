"""Configuration: validated, frozen, unknown keys refused, errors with file, line and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_config_is_valid() -> None:
    """config/fixalloc.toml as shipped loads, routes its book to a configured broker."""
    cfg = load_config(ROOT / "config" / "fixalloc.toml")
    assert cfg.book("SMA-CORE").broker == "BRKA"
    assert cfg.http.host == "127.0.0.1"
    assert cfg.resolve(cfg.fix.data_dictionary) == ROOT / "fix_specs" / "FIX44.xml"


def test_unknown_key_is_refused_with_its_line(tmp_path: Path) -> None:
    """A typo in a key names the file, the line and 'unknown key'."""
    path = _write(tmp_path, '[gateway]\nname = "x"\n\n[http]\nprot = 8080\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}:5: http.prot: unknown key"


def test_invalid_toml_reports_the_line(tmp_path: Path) -> None:
    """A syntax error carries the parser's line number."""
    path = _write(tmp_path, '[gateway]\nname = "x\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.line == 2 and "invalid TOML" in err.value.reason


def test_book_routed_to_unknown_broker_is_refused(tmp_path: Path) -> None:
    """Cross-field validation: a book must route to a configured broker session."""
    path = _write(tmp_path, '[[books]]\nname = "B"\nbroker = "NOPE"\n')
    with pytest.raises(ConfigError, match="routes to broker 'NOPE'"):
        load_config(path)


def test_out_of_range_port_names_the_key(tmp_path: Path) -> None:
    """Constrained values are checked: a port above 65535 is refused."""
    path = _write(tmp_path, "[[fix.oms]]\nname = \"O\"\ntarget_comp_id = \"O\"\nport = 70000\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "fix.oms.0.port" in err.value.reason and err.value.line == 4


def test_environment_overrides_a_key(tmp_path: Path) -> None:
    """FIXALLOC__SECTION__KEY overrides the file (12-factor)."""
    path = _write(tmp_path, "[http]\nport = 8080\n")
    cfg = load_config(path, environ={"FIXALLOC__HTTP__PORT": "9191"})
    assert cfg.http.port == 9191


def test_config_is_frozen_and_hash_is_stable(tmp_path: Path) -> None:
    """The tree cannot be mutated and hashes the same content the same way."""
    path = _write(tmp_path, "[http]\nport = 8080\n")
    a, b = load_config(path), load_config(path)
    assert a.config_hash() == b.config_hash()
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises its own ValidationError
        a.http.port = 1  # type: ignore[misc]


def test_passwords_have_no_place_in_the_config(tmp_path: Path) -> None:
    """A literal password key is an unknown key: secrets come from the environment."""
    path = _write(tmp_path, '[[fix.brokers]]\nname = "B"\ntarget_comp_id = "B"\nport = 1\n'
                            'password = "hunter2"\n')
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(path)


_TWO_BROKERS = """[[fix.brokers]]
name = "BRKA"
target_comp_id = "BRKA"
port = 9001

[[fix.brokers]]
name = "BRKB"
target_comp_id = "BRKB"
port = 9002

[[books]]
name = "B"
broker = "BRKA"
"""


@pytest.mark.parametrize(("routing", "message"), [
    ('[books.routing]\nby = "wheel"\nwheel = { BRKA = "0.6", BRKC = "0.4" }\n',
     "routes to broker 'BRKC'"),
    ('[books.routing]\nby = "wheel"\nwheel = { BRKA = "0.6", BRKB = "0.3" }\n',
     "wheel shares sum to 0.9, not 1"),
    ('[books.routing]\nby = "wheel"\nwheel = { BRKA = "1" }\n', "two brokers or more"),
    ('[books.routing]\nby = "account"\naccount_field = "prime_broker"\n',
     "needs account_field and brokers"),
    ('[books.routing]\nby = "account"\naccount_field = "desk"\nbrokers = { X = "BRKA" }\n',
     "books.0.routing.account_field"),
    ('[books.routing]\nby = "account"\naccount_field = "custodian"\n'
     'brokers = { X = "BRKZ" }\n', "routes to broker 'BRKZ'"),
])
def test_a_bad_broker_routing_is_refused(tmp_path: Path, routing: str, message: str) -> None:
    path = _write(tmp_path, _TWO_BROKERS + routing)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(path)


def test_a_book_split_across_two_brokers_loads(tmp_path: Path) -> None:
    path = _write(tmp_path, _TWO_BROKERS + '[books.routing]\nby = "account"\n'
                  'account_field = "prime_broker"\nbrokers = { PB01 = "BRKA", PB02 = "BRKB" }\n')
    routing = load_config(path).book("B").routing
    assert routing is not None and routing.broker_names() == {"BRKA", "BRKB"}


@pytest.mark.parametrize("session", ['name = "desk"\ntarget_comp_id = "X"',
                                     'name = "B2"\ntarget_comp_id = "DESK"'])
def test_the_desk_sessions_name_and_comp_id_are_reserved(tmp_path: Path, session: str) -> None:
    path = _write(tmp_path, f"[[fix.brokers]]\n{session}\nport = 9001\n")
    with pytest.raises(ConfigError, match="desk session"):
        load_config(path)


@pytest.mark.parametrize("session", ['name = "cross"\ntarget_comp_id = "X"',
                                     'name = "B2"\ntarget_comp_id = "CROSS"'])
def test_the_crossing_venues_name_and_comp_id_are_reserved(tmp_path: Path,
                                                           session: str) -> None:
    path = _write(tmp_path, f"[[fix.brokers]]\n{session}\nport = 9001\n")
    with pytest.raises(ConfigError, match="internal crossing venue"):
        load_config(path)


def test_the_crossing_venue_is_a_ready_to_book_broker(tmp_path: Path) -> None:
    # The venue's J carries no lines (the split is in the gateway's record) and nothing
    # waits for an AK from it; an unknown broker name is still an error.
    config = load_config(_write(tmp_path, ""))
    venue = config.broker("cross")
    assert venue.alloc_type == "ready_to_book" and venue.commission_per_share is None
    with pytest.raises(KeyError):
        config.broker("NOPE")
