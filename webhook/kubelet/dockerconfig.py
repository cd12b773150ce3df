"""Docker config parsing: a registry Secret's data -> the keys the kubelet's keyring holds.

Pure: no I/O, standard library only. A port, to the letter, of what the kubelet does
with a pod's ``imagePullSecrets`` (kubernetes ``pkg/credentialprovider``):

* ``secrets/secrets.go`` ``MakeDockerKeyring``: a ``kubernetes.io/dockerconfigjson``
  secret is read from data key ``.dockerconfigjson`` (``{"auths": {...}}``), a
  ``kubernetes.io/dockercfg`` secret from ``.dockercfg`` (the legacy bare map). Any
  other type, a missing key or an empty value is skipped silently
  (:attr:`ParsedDockerConfig.ignored`). A ``json.Unmarshal`` error fails the *whole*
  keyring, so every pull of the pod fails (:attr:`ParsedDockerConfig.error`).
* ``config.go``: ``DockerConfigJSON``, ``DockerConfig``, ``DockerConfigEntry.UnmarshalJSON``
  and ``decodeDockerConfigFieldAuth`` (``auth`` is base64 of ``username:password``,
  padded or unpadded; a decoding error or a missing ``:`` is an unmarshal error).
  Decoding follows Go's ``encoding/json``: object keys match struct fields
  case-insensitively (``"Auths"``; also U+017F for ``s``, U+212A for ``k``), unknown
  fields are ignored, a value of the wrong JSON type is an error, ``null`` leaves a
  string unchanged and resets a map, a repeated ``auths`` merges into the same map,
  invalid UTF-8 and lone surrogates become U+FFFD, nesting deeper than 10000 is an
  error, ``NaN``/``Infinity`` are not JSON.

Each location is then added to the keyring as ``BasicDockerKeyring.Add`` does
(:func:`webhook.kubelet.keyring.add_key`).

Reasons never contain credential material: no values, no decoded data; a registry
location is shown with any ``user@`` part replaced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from webhook.kubelet._go import (
    SPACE,
    JSONObject,
    JSONSyntaxError,
    b64_raw,
    b64_std,
    fix_surrogates,
    is_field,
    json_kind,
    json_unmarshal,
)
from webhook.kubelet.keyring import RegistryKey, add_key

__all__ = [
    "DOCKER_CONFIG_JSON_KEY",
    "DOCKER_CONFIG_KEY",
    "REGISTRY_SECRET_TYPES",
    "SECRET_TYPE_DOCKERCFG",
    "SECRET_TYPE_DOCKERCONFIGJSON",
    "ParsedDockerConfig",
    "parse_docker_config",
]

SECRET_TYPE_DOCKERCONFIGJSON = "kubernetes.io/dockerconfigjson"  # noqa: S105 (a type name)
SECRET_TYPE_DOCKERCFG = "kubernetes.io/dockercfg"  # noqa: S105 (a type name)
REGISTRY_SECRET_TYPES = (SECRET_TYPE_DOCKERCONFIGJSON, SECRET_TYPE_DOCKERCFG)

#: Data keys the kubelet reads (v1.DockerConfigJsonKey, v1.DockerConfigKey).
DOCKER_CONFIG_JSON_KEY = ".dockerconfigjson"
DOCKER_CONFIG_KEY = ".dockercfg"
_DATA_KEY_FOR_TYPE = {
    SECRET_TYPE_DOCKERCONFIGJSON: DOCKER_CONFIG_JSON_KEY,
    SECRET_TYPE_DOCKERCFG: DOCKER_CONFIG_KEY,
}


# Longest registry location quoted in a reason.
_MAX_SHOWN = 80
_INTERNAL_ERROR = "internal error while parsing the secret"


@dataclass(frozen=True, slots=True)
class ParsedDockerConfig:
    """The registry keys a secret serves, or why the kubelet cannot use it.

    error is None when the kubelet parses it. When error is set, keys is empty and the
    secret must never be injected (the kubelet would fail every pull of the pod).
    ignored is True when the kubelet silently skips the secret (wrong type, empty data).
    """

    keys: tuple[RegistryKey, ...]
    error: str | None = None
    ignored: bool = False


def parse_docker_config(
    secret_type: str,
    data: Mapping[str, str] | None,
    string_data: Mapping[str, str] | None = None,
) -> ParsedDockerConfig:
    """Parse a Secret's data (base64 values) / stringData (plain) into registry keys.

    ``stringData`` values override ``data`` values of the same key, as the API server
    does. Never raises: anything malformed is an ``error`` with a reason that names
    the problem but never a value.
    """
    try:
        return _parse_secret(secret_type, data, string_data)
    except _ConfigError as exc:
        return ParsedDockerConfig((), error=exc.reason)
    except Exception as exc:  # never raise on hostile input; treat it as unusable
        return ParsedDockerConfig((), error=f"{_INTERNAL_ERROR} ({type(exc).__name__})")


class _ConfigError(Exception):
    """The kubelet cannot use the secret; reason is safe to show and log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _parse_secret(secret_type: object, data: object, string_data: object) -> ParsedDockerConfig:
    if not isinstance(secret_type, str) or secret_type not in _DATA_KEY_FOR_TYPE:
        return ParsedDockerConfig((), ignored=True)
    data_key = _DATA_KEY_FOR_TYPE[secret_type]
    merged = _decode_data(data)
    merged.update(_encode_string_data(string_data))
    blob = merged.get(data_key)
    if not blob:
        return ParsedDockerConfig((), ignored=True)
    doc = _go_json_loads(blob, data_key)
    if secret_type == SECRET_TYPE_DOCKERCONFIGJSON:
        locations = _config_json_locations(doc, data_key)
    else:
        locations = _config_locations(doc, data_key)
    keys: dict[bytes, RegistryKey] = {}
    for location in locations:
        key = add_key(location)
        if key is not None:
            keys.setdefault(key.raw, key)
    return ParsedDockerConfig(tuple(keys.values()))


def _decode_data(data: object) -> dict[str, bytes]:
    """Secret.data: base64 values, as the API server decodes them (Go StdEncoding)."""
    out: dict[str, bytes] = {}
    if data is None:
        return out
    if not isinstance(data, Mapping):
        raise _ConfigError(f"data must be a mapping, not {type(data).__name__}")
    for name, value in data.items():
        if not isinstance(name, str):
            raise _ConfigError(f"data has a key that is not a string ({type(name).__name__})")
        if value is None:  # JSON null for a []byte is an empty value
            out[name] = b""
            continue
        if not isinstance(value, str):
            raise _ConfigError(
                f"data[{_shown_data_key(name)}] must be a base64 string, not {type(value).__name__}"
            )
        decoded = b64_std(value)
        if decoded is None:
            raise _ConfigError(f"data[{_shown_data_key(name)}] is not valid base64")
        out[name] = decoded
    return out


def _encode_string_data(string_data: object) -> dict[str, bytes]:
    """Secret.stringData: plain text values, which override data on write."""
    out: dict[str, bytes] = {}
    if string_data is None:
        return out
    if not isinstance(string_data, Mapping):
        raise _ConfigError(f"stringData must be a mapping, not {type(string_data).__name__}")
    for name, value in string_data.items():
        if not isinstance(name, str):
            raise _ConfigError(f"stringData has a key that is not a string ({type(name).__name__})")
        if value is None:
            out[name] = b""
        elif isinstance(value, str):
            out[name] = fix_surrogates(value).encode("utf-8")
        else:
            raise _ConfigError(
                f"stringData[{_shown_data_key(name)}] must be a string, not {type(value).__name__}"
            )
    return out


def _go_json_loads(blob: bytes, data_key: str) -> object:
    """json.Unmarshal's view of blob, or _ConfigError where Go reports a syntax error."""
    try:
        return json_unmarshal(blob)
    except JSONSyntaxError as exc:
        raise _ConfigError(f"{data_key} is not valid JSON ({exc})") from None


def _config_json_locations(doc: object, data_key: str) -> list[str]:
    """json.Unmarshal into DockerConfigJSON; the locations of the final Auths map."""
    if doc is None:
        return []
    if not isinstance(doc, JSONObject):
        raise _ConfigError(f"{data_key} must hold a JSON object, not {json_kind(doc)}")
    auths: dict[str, None] | None = None
    for name, value in doc.pairs:
        if is_field(name, "auths"):
            if value is None:
                auths = None  # null resets a map
            elif isinstance(value, JSONObject):
                if auths is None:
                    auths = {}
                auths.update(_config_entries(value, data_key))  # a repeat merges
            else:
                raise _ConfigError(
                    f'{data_key}: "auths" must be a JSON object, not {json_kind(value)}'
                )
        elif is_field(name, "httpheaders"):
            if value is None:
                continue
            if not isinstance(value, JSONObject):
                raise _ConfigError(
                    f'{data_key}: "HttpHeaders" must be a JSON object, not {json_kind(value)}'
                )
            for _header, header_value in value.pairs:
                if header_value is not None and not isinstance(header_value, str):
                    raise _ConfigError(
                        f'{data_key}: "HttpHeaders" values must be strings,'
                        f" not {json_kind(header_value)}"
                    )
    return list(auths or ())


def _config_locations(doc: object, data_key: str) -> list[str]:
    """json.Unmarshal into the legacy DockerConfig (a bare map of entries)."""
    if doc is None:
        return []
    if not isinstance(doc, JSONObject):
        raise _ConfigError(f"{data_key} must hold a JSON object, not {json_kind(doc)}")
    return list(_config_entries(doc, data_key))


def _config_entries(entries: JSONObject, data_key: str) -> dict[str, None]:
    """A DockerConfig map: every entry must pass DockerConfigEntry.UnmarshalJSON."""
    out: dict[str, None] = {}
    for location, entry in entries.pairs:
        _check_entry(entry, data_key, location)
        out[fix_surrogates(location)] = None
    return out


_ENTRY_FIELDS = ("username", "password", "email", "auth")


def _check_entry(entry: object, data_key: str, location: str) -> None:
    """DockerConfigEntry.UnmarshalJSON: raise _ConfigError where it returns an error."""
    if entry is None:
        return
    where = f"{data_key}: the entry for registry {_shown_location(location)}"
    if not isinstance(entry, JSONObject):
        raise _ConfigError(f"{where} must be a JSON object, not {json_kind(entry)}")
    auth = ""
    for name, value in entry.pairs:
        for field_name in _ENTRY_FIELDS:
            if is_field(name, field_name):
                if isinstance(value, str):
                    if field_name == "auth":
                        auth = value
                elif value is not None:  # null leaves a string field unchanged
                    raise _ConfigError(
                        f'{where}: "{field_name}" must be a string, not {json_kind(value)}'
                    )
                break
    if auth:
        _check_auth(fix_surrogates(auth), where)


def _check_auth(auth: str, where: str) -> None:
    """decodeDockerConfigFieldAuth: base64 (padded when it ends in '=') of user:password."""
    padded = auth.rstrip(SPACE).endswith("=")
    decoded = b64_std(auth) if padded else b64_raw(auth)
    if decoded is None:
        raise _ConfigError(f'{where}: "auth" is not valid base64')
    if b":" not in decoded:
        raise _ConfigError(f'{where}: "auth" must be base64 of username:password (no ":")')


def _shown(name: str) -> str:
    """A text, quoted and bounded, for a reason."""
    if len(name) > _MAX_SHOWN:
        name = name[: _MAX_SHOWN - 3] + "..."
    return repr(name)


def _shown_data_key(name: str) -> str:
    """A data key for a reason: only the two the kubelet reads are named."""
    return _shown(name) if name in _DATA_KEY_FOR_TYPE.values() else "<another key>"


def _shown_location(location: str) -> str:
    """A registry location for a reason, without any user[:password]@ part."""
    at = location.rfind("@")
    if at >= 0:
        location = "<user>@" + location[at + 1 :]
    return _shown(location)
