"""Tests for settings loading: built-in defaults, TOML deep merge, environment, errors."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from stableaudio_async import config
from stableaudio_async.config import (
    PollPolicy,
    ProviderSettings,
    RateLimit,
    RetryPolicy,
    Settings,
    load_settings,
)
from stableaudio_async.errors import ConfigError

REPO_ROOT = Path(__file__).parents[1]
SHIPPED_CONFIG = REPO_ROOT / "configs" / "providers.toml"

# Taken at import (collection) time, before any test of any module has called load_settings.
_PRISTINE_DEFAULTS = copy.deepcopy(config.DEFAULTS)


@pytest.fixture(autouse=True)
def _isolated_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give every test its own pristine copy of DEFAULTS, so no test's mutation can leak."""
    monkeypatch.setattr(config, "DEFAULTS", copy.deepcopy(_PRISTINE_DEFAULTS))


def write(tmp_path: Path, text: str, name: str = "providers.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- defaults -----------------------------------------------------------------------------


def test_defaults_configure_pixazo() -> None:
    """With no file, the built-in settings hold a pixazo provider with its documented values."""
    settings = load_settings(env={})
    assert isinstance(settings, Settings)
    pixazo = settings.provider("pixazo")
    assert pixazo.base_url == "https://gateway.pixazo.ai"
    assert pixazo.api_key_env == "PIXAZO_API_KEY"
    assert pixazo.max_in_flight == 16
    assert pixazo.rate_limit == RateLimit(requests=10, period=1.0, counts="all")
    assert pixazo.poll == PollPolicy(initial=5.0, max=10.0, factor=1.5, timeout=600.0)
    assert pixazo.retry == RetryPolicy()


def test_shipped_config_matches_builtin_defaults() -> None:
    """configs/providers.toml states exactly the built-in defaults."""
    if not SHIPPED_CONFIG.is_file():
        pytest.skip(f"{SHIPPED_CONFIG.relative_to(REPO_ROOT)} does not exist yet")
    assert load_settings(SHIPPED_CONFIG, env={}) == load_settings(env={})


def test_load_settings_reads_os_environ_when_env_not_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without an explicit env, the base-URL override comes from os.environ."""
    monkeypatch.setenv("STABLEAUDIO_PIXAZO_BASE_URL", "http://127.0.0.1:9999")
    assert load_settings().provider("pixazo").base_url == "http://127.0.0.1:9999"


# --- files and merging --------------------------------------------------------------------


def test_file_overriding_one_value_keeps_other_defaults(tmp_path: Path) -> None:
    """A file setting only max_in_flight changes that value and keeps every other default."""
    path = write(tmp_path, "[providers.pixazo]\nmax_in_flight = 4\n")
    loaded = load_settings(path, env={}).provider("pixazo")
    default = load_settings(env={}).provider("pixazo")
    assert loaded.max_in_flight == 4
    assert loaded.model_dump(exclude={"max_in_flight"}) == default.model_dump(
        exclude={"max_in_flight"}
    )


def test_nested_table_is_merged_key_by_key(tmp_path: Path) -> None:
    """Overriding poll.timeout keeps poll.initial, poll.max and poll.factor from the defaults."""
    path = write(tmp_path, "[providers.pixazo.poll]\ntimeout = 120.0\n")
    poll = load_settings(path, env={}).provider("pixazo").poll
    assert poll == PollPolicy(initial=5.0, max=10.0, factor=1.5, timeout=120.0)


def test_file_can_add_a_provider(tmp_path: Path) -> None:
    """A file may add a provider (here one named for a custom gateway) next to the built-in ones."""
    path = write(
        tmp_path,
        '[providers.gateway]\nbase_url = "https://gateway.example"\n'
        'api_key_env = "GATEWAY_API_KEY"\n'
        "[providers.gateway.rate_limit]\nrequests = 150\nperiod = 10.0\n",
    )
    settings = load_settings(path, env={})
    assert set(settings.providers) == {"gateway"} | set(load_settings(env={}).providers)
    assert settings.provider("gateway").rate_limit == RateLimit(requests=150, period=10.0)
    assert settings.provider("pixazo") == load_settings(env={}).provider("pixazo")


def test_file_overrides_part_of_a_builtin_table(tmp_path: Path) -> None:
    """Overriding one rate-limit key keeps the provider's other built-in rate-limit values."""
    path = write(tmp_path, "[providers.stability.rate_limit]\nrequests = 100\n")
    limit = load_settings(path, env={}).provider("stability").rate_limit
    assert limit == RateLimit(requests=100, period=10.0, margin=0.02, lockout=60.0)


def test_path_may_be_a_string(tmp_path: Path) -> None:
    """load_settings accepts a str path as well as a Path."""
    path = write(tmp_path, "[providers.pixazo]\nmax_in_flight = 2\n")
    assert load_settings(str(path), env={}).provider("pixazo").max_in_flight == 2


# --- environment --------------------------------------------------------------------------


def test_env_overrides_base_url() -> None:
    """STABLEAUDIO_PIXAZO_BASE_URL replaces pixazo's base_url and nothing else."""
    env = {"STABLEAUDIO_PIXAZO_BASE_URL": "http://127.0.0.1:8080"}
    pixazo = load_settings(env=env).provider("pixazo")
    default = load_settings(env={}).provider("pixazo")
    assert pixazo.base_url == "http://127.0.0.1:8080"
    assert pixazo.model_dump(exclude={"base_url"}) == default.model_dump(exclude={"base_url"})


def test_env_overrides_base_url_from_file(tmp_path: Path) -> None:
    """The environment wins over a base_url written in the config file."""
    path = write(tmp_path, '[providers.pixazo]\nbase_url = "https://file.example"\n')
    env = {"STABLEAUDIO_PIXAZO_BASE_URL": "http://env.example"}
    assert load_settings(path, env=env).provider("pixazo").base_url == "http://env.example"
    assert load_settings(path, env={}).provider("pixazo").base_url == "https://file.example"


def test_empty_env_base_url_is_ignored() -> None:
    """An empty STABLEAUDIO_PIXAZO_BASE_URL does not blank the base URL."""
    pixazo = load_settings(env={"STABLEAUDIO_PIXAZO_BASE_URL": ""}).provider("pixazo")
    assert pixazo.base_url == "https://gateway.pixazo.ai"


def test_env_override_does_not_leak_into_later_loads() -> None:
    """A base-URL override from one call's env does not change another call's settings."""
    load_settings(env={"STABLEAUDIO_PIXAZO_BASE_URL": "http://127.0.0.1:8080"})
    assert config.DEFAULTS["providers"]["pixazo"]["base_url"] == "https://gateway.pixazo.ai"
    assert load_settings(env={}).provider("pixazo").base_url == "https://gateway.pixazo.ai"


# --- invalid settings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        pytest.param("[providers.pixazo]\nmax_in_flight = 0\n", "providers.pixazo.max_in_flight",
                     id="max-in-flight-zero"),
        pytest.param("[providers.pixazo.poll]\ninitial = 20.0\nmax = 10.0\n", "poll.max",
                     id="poll-max-below-initial"),
        pytest.param("[providers.pixazo]\nbogus = 1\n", "providers.pixazo.bogus",
                     id="unknown-provider-key"),
        pytest.param("[providers.pixazo.rate_limit]\nrequests = 0\n",
                     "providers.pixazo.rate_limit.requests", id="rate-limit-zero"),
        pytest.param("[providers.pixazo.rate_limit]\ncounts = \"some\"\n",
                     "providers.pixazo.rate_limit.counts", id="rate-limit-bad-counts"),
        pytest.param("[download]\nchunk_size = 10\n", "download.chunk_size",
                     id="download-chunk-too-small"),
        pytest.param("colour = \"blue\"\n", "colour", id="unknown-top-level-key"),
        pytest.param("[providers.newprovider]\nbase_url = \"https://x\"\n",
                     "providers.newprovider.api_key_env", id="new-provider-missing-key-env"),
    ],
)
def test_invalid_values_raise_config_error_naming_key_and_file(
    tmp_path: Path, text: str, key: str
) -> None:
    """An invalid value raises ConfigError whose message names the key and the file."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    message = str(info.value)
    assert key in message
    assert str(path) in message


def test_missing_file_raises_config_error(tmp_path: Path) -> None:
    """A config path that does not exist raises ConfigError naming the path."""
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match=r"absent\.toml"):
        load_settings(path, env={})


def test_unreadable_file_raises_config_error(tmp_path: Path) -> None:
    """A path that cannot be read as a file (here a directory) raises ConfigError naming it."""
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, env={})
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("[providers.pixazo\n", id="unclosed-table"),
        pytest.param("max_in_flight = \n", id="missing-value"),
        pytest.param("a = 1\na = 2\n", id="duplicate-key"),
    ],
)
def test_malformed_toml_raises_config_error(tmp_path: Path, text: str) -> None:
    """A file that is not valid TOML raises ConfigError naming the file."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert str(path) in str(info.value)


def test_non_utf8_file_raises_config_error(tmp_path: Path) -> None:
    """A file that is not UTF-8 raises ConfigError naming the file, not UnicodeDecodeError."""
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[providers.pixazo]\nbase_url = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert str(path) in str(info.value)


def test_providers_not_a_table_raises_config_error(tmp_path: Path) -> None:
    """A `providers` value that is not a table raises ConfigError naming the key and file."""
    path = write(tmp_path, 'providers = "pixazo"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert "providers" in str(info.value)
    assert str(path) in str(info.value)


def test_provider_not_a_table_raises_config_error(tmp_path: Path) -> None:
    """A provider entry that is not a table raises ConfigError naming it and the file."""
    path = write(tmp_path, "[providers]\nstability = 3\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert "providers.stability" in str(info.value)
    assert str(path) in str(info.value)


# --- API keys and provider lookup ---------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({}, None, id="missing"),
        pytest.param({"PIXAZO_API_KEY": ""}, None, id="empty"),
        pytest.param({"PIXAZO_API_KEY": "   \t"}, None, id="blank"),
        pytest.param({"PIXAZO_API_KEY": "sk-1"}, "sk-1", id="set"),
        pytest.param({"PIXAZO_API_KEY": "  sk-2\n"}, "sk-2", id="stripped"),
        pytest.param({"OTHER_KEY": "sk-3"}, None, id="other-variable"),
    ],
)
def test_api_key_from_env(env: dict[str, str], expected: str | None) -> None:
    """api_key(env) returns the stripped key, or None when the variable is missing or blank."""
    assert load_settings(env={}).provider("pixazo").api_key(env) == expected


def test_api_key_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """api_key() without env reads the process environment."""
    provider = ProviderSettings(base_url="https://x", api_key_env="SA_TEST_KEY_VAR")
    monkeypatch.delenv("SA_TEST_KEY_VAR", raising=False)
    assert provider.api_key() is None
    monkeypatch.setenv("SA_TEST_KEY_VAR", "sk-env")
    assert provider.api_key() == "sk-env"


def test_settings_never_hold_the_key() -> None:
    """The key's value does not appear anywhere in the dumped settings."""
    env = {"PIXAZO_API_KEY": "sk-secret-value-123"}
    settings = load_settings(env=env)
    assert "sk-secret-value-123" not in settings.model_dump_json()


def test_unknown_provider_raises_config_error_listing_known(tmp_path: Path) -> None:
    """Settings.provider() with an unknown name raises ConfigError listing configured providers."""
    path = write(
        tmp_path,
        '[providers.stability]\nbase_url = "https://api.stability.ai"\n'
        'api_key_env = "STABILITY_API_KEY"\n',
    )
    settings = load_settings(path, env={})
    with pytest.raises(ConfigError) as info:
        settings.provider("nope")
    message = str(info.value)
    assert "'nope'" in message
    assert "pixazo" in message
    assert "stability" in message


def test_unknown_provider_with_no_providers_says_none() -> None:
    """With no providers configured, the error says none are configured."""
    with pytest.raises(ConfigError, match="none"):
        Settings(providers={}).provider("pixazo")


def test_an_explicit_poll_initial_beats_the_built_in_prior(tmp_path: Path) -> None:
    """poll.initial set without expected turns the built-in AI/ML API prior off; both set keep it."""
    built_in = load_settings(env={}).providers["aimlapi"].poll
    assert built_in.expected == 50.0 and built_in.expected_per_second == pytest.approx(5 / 3)
    mine = tmp_path / "mine.toml"
    mine.write_text("[providers.aimlapi.poll]\ninitial = 0.2\nmax = 1.0\n")
    poll = load_settings(mine, env={}).providers["aimlapi"].poll
    assert poll.initial == 0.2 and poll.expected is None and poll.expected_per_second is None
    both = tmp_path / "both.toml"
    both.write_text("[providers.aimlapi.poll]\ninitial = 0.2\nmax = 1.0\nexpected = 3.0\n")
    poll = load_settings(both, env={}).providers["aimlapi"].poll
    assert poll.expected == 3.0 and poll.expected_per_second == pytest.approx(5 / 3)
    poll = load_settings(env={}, overrides={"providers": {"aimlapi": {"poll": {
        "initial": 0.5, "max": 1.0}}}}).providers["aimlapi"].poll
    assert poll.expected is None
    # The shipped config states the built-in values, so loading it changes nothing.
    shipped = Path(__file__).parent.parent / "configs" / "providers.toml"
    assert load_settings(shipped, env={}).providers["aimlapi"].poll == built_in
