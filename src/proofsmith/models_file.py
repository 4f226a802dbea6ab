"""The models file, ``proofsmith.toml``: named models with their servers and settings.

Found in the working directory, or given with ``--config FILE`` (env ``PROOFSMITH_CONFIG``)::

    [models.deepseek-math-v2]
    model = "deepseek-ai/DeepSeek-Math-V2"       # the name the server serves (default: the key)
    base_urls = ["http://gpu1:8000/v1", "http://gpu2:8000/v1"]
    api_key_env = "DEEPSEEK_API_KEY"             # the variable holding the key, never the key
    context_length = 163840
    max_output_tokens = 64000
    prices = { prompt_per_million = 0.28, completion_per_million = 0.42 }

    [models.deepseek-math-v2.roles]
    generator = { max_output_tokens = 128000 }   # generate and refine

so that ``--model deepseek-math-v2`` is all a command needs. Every key but ``model``,
``base_urls`` and ``api_key_env`` is a field of :class:`proofsmith.session.ModelConfig`, with
its meaning and default. Command-line options override the file. Errors name the file and the
key (docs/configuration.md).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from .errors import UserError
from .llm.client import TransportName
from .llm.config import MAX_CONCURRENCY, MAX_CONTEXT_LENGTH, MAX_RETRIES, Prices, api_key_problem
from .redact import redact_url
from .session import EMBEDDED, ModelConfig, RoleSettings

__all__ = ["CONFIG_FILE_NAME", "ModelEntry", "ModelsFile", "load_models_file"]

CONFIG_FILE_NAME = "proofsmith.toml"

_MC = ModelConfig.model_fields


def _desc(name: str) -> str:
    return _MC[name].description or ""


class ModelEntry(BaseModel):
    """One ``[models.NAME]`` table. Unset fields take :class:`ModelConfig`'s defaults."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="Model name sent to the server (default: the entry's name).")
    base_urls: list[str] = Field(default_factory=list, description=_desc("base_urls"))
    api_key_env: str | None = Field(
        None, description="Name of the environment variable that holds the API key (the key never goes in the file)."
    )
    concurrency: int | None = Field(None, ge=1, le=MAX_CONCURRENCY, description=_desc("concurrency"))
    temperature: float | None = Field(None, ge=0, description=_desc("temperature"))
    top_p: float | None = Field(None, gt=0, le=1, description=_desc("top_p"))
    max_output_tokens: int | None = Field(None, gt=0, le=MAX_CONTEXT_LENGTH, description=_desc("max_output_tokens"))
    context_length: int | None = Field(None, gt=0, le=MAX_CONTEXT_LENGTH, description=_desc("context_length"))
    timeout: float | None = Field(None, gt=0, allow_inf_nan=False, description=_desc("timeout"))
    max_retries: int | None = Field(None, ge=0, le=MAX_RETRIES, description=_desc("max_retries"))
    transport: TransportName | None = Field(None, description=_desc("transport"))
    prices: Prices | None = Field(None, description=_desc("prices"))
    roles: dict[str, RoleSettings] = Field(default_factory=dict, description=_desc("roles"))

    @field_validator("base_urls", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("base_urls")
    @classmethod
    def _no_credentials(cls, v: list[str]) -> list[str]:
        for url in v:
            if redact_url(url) != url:
                raise ValueError(
                    "a base URL in the file must not carry credentials (user:password@ or a key in the "
                    "query): name the environment variable holding the key with api_key_env"
                )
        return v

    @field_validator("prices", mode="before")
    @classmethod
    def _known_prices(cls, v: Any) -> Any:
        if isinstance(v, dict):
            unknown = sorted(set(v) - set(Prices.model_fields))
            if unknown:
                raise ValueError(f"unknown price {unknown[0]!r}: use {', '.join(Prices.model_fields)}")
        return v

    @field_validator("roles", mode="before")
    @classmethod
    def _known_roles(cls, v: Any) -> Any:
        if isinstance(v, dict):
            from .session import role_names

            for key in v:
                role_names(key)  # ValueError naming the roles
        return v

    def config_fields(self, name: str, need_key: bool = True) -> dict[str, Any]:
        """The :class:`ModelConfig` fields this entry sets (``name``: its key in the file); the
        API key is read from ``api_key_env`` (:class:`UserError` when that is not set and
        ``need_key``)."""
        data = self.model_dump(exclude_unset=True, exclude={"api_key_env", "model", "roles", "prices"})
        data["model"] = self.model or name
        data["roles"] = dict(self.roles)
        if self.prices is not None:
            data["prices"] = self.prices
        if self.api_key_env and need_key:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise UserError(
                    f"models.{name}.api_key_env: the environment variable {self.api_key_env} is not set "
                    "(set it, or pass --api-key)"
                )
            data["api_key"] = check_api_key(key, f"models.{name}.api_key_env (the environment variable {self.api_key_env})")
        return data


class ModelsFile(BaseModel):
    """A models file: ``[models.NAME]`` tables (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    models: dict[str, ModelEntry] = Field(default_factory=dict)
    _path: Path | None = PrivateAttr(None)

    @property
    def path(self) -> Path | None:
        """The file it was read from."""
        return self._path

    def entry(self, name: str | None) -> ModelEntry | None:
        return self.models.get(name) if name else None

    def config_for(self, name: str | None, need_key: bool = True) -> dict[str, Any] | None:
        """The :class:`ModelConfig` fields of model ``name`` (None when the file does not name
        it); errors name the file and the key."""
        entry = self.entry(name)
        if entry is None:
            return None
        try:
            return entry.config_fields(name, need_key=need_key)  # type: ignore[arg-type]
        except UserError as e:
            raise UserError(f"{self.path}: {e}") from None


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _check_raw(data: dict[str, Any], path: Path) -> None:
    """Errors pydantic would word badly: a key in the file, the embedded model with servers."""
    models = data.get("models")
    if not isinstance(models, dict):
        return
    for name, entry in models.items():
        if not isinstance(entry, dict):
            continue
        if "api_key" in entry:
            raise UserError(
                f"{path}: models.{name}.api_key: API keys do not go in the file; put the key in an "
                "environment variable and name it with api_key_env"
            )
        if entry.get("model", name) == EMBEDDED and entry.get("base_urls"):
            raise UserError(f"{path}: models.{name}: the embedded model runs locally; drop base_urls")


def parse_models_file(text: str, path: Path) -> ModelsFile:
    """A models file's text, validated (:class:`UserError` naming the file and the key)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML: {e}") from None
    except RecursionError:
        raise UserError(f"{path}: not valid TOML: arrays or tables nested too deep") from None
    _check_raw(data, path)
    try:
        mf = ModelsFile.model_validate(data)
    except ValidationError as e:
        errs = e.errors()
        first = errs[0]
        more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
        msg = str(first["msg"]).removeprefix("Value error, ")
        raise UserError(f"{path}: {_location(first['loc'])}: {msg}{more}") from None
    mf._path = path
    return mf


def load_models_file(path: str | Path | None = None, cwd: str | Path | None = None) -> ModelsFile | None:
    """The models file ``path`` (it must exist), else ``$PROOFSMITH_CONFIG``, else
    ``proofsmith.toml`` in ``cwd`` (the working directory) if there is one, else None."""
    explicit = path if path is not None else (os.environ.get("PROOFSMITH_CONFIG") or None)
    if explicit is not None:
        p = Path(explicit)
        if not p.is_file():
            raise UserError(f"models file {p} not found (--config / PROOFSMITH_CONFIG)")
    else:
        p = Path(cwd or Path.cwd()) / CONFIG_FILE_NAME
        if not p.is_file():
            return None
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{p}: cannot read the models file: {e}") from None
    return parse_models_file(text, p)


def _env(*names: str) -> str | None:
    for n in names:
        if v := os.environ.get(n):
            return v
    return None


def check_api_key(key: str, where: str) -> str:
    """``key``, which goes in an HTTP header: Latin-1 without control characters (else the HTTP
    layer fails with a codec error, or refuses the header after the run has started).
    :class:`UserError` naming ``where`` the key came from, never the key."""
    why = api_key_problem(key)
    if why is not None:
        raise UserError(f"the API key from {where} cannot be sent in an HTTP header: {why}")
    return key


def resolve_config(
    model: str | None = None,
    *,
    base_urls: list[str] | str | None = None,
    api_key: str | None = None,
    config_file: str | Path | None = None,
    settings: dict[str, Any] | None = None,
    role_settings: dict[str, dict[str, Any]] | None = None,
    cwd: str | Path | None = None,
) -> ModelConfig:
    """The :class:`ModelConfig` of a model chosen by name, as every command and the Python API
    choose it. Precedence: the arguments > the models file's entry for ``model`` > the
    environment (``PROOFSMITH_MODEL``, ``PROOFSMITH_BASE_URL`` for models not in the file,
    ``PROOFSMITH_API_KEY`` / ``OPENAI_API_KEY``) > ModelConfig's defaults.

    ``settings``: ModelConfig fields (``temperature``, ``max_output_tokens``, ``prices``, …;
    None values are ignored); a sampling value given here sets every role (the file's
    per-role values of that field are dropped). ``role_settings``: {role or alias: {field:
    value}} on top (a role named exactly wins over an alias). :class:`UserError` (one line)
    for an inconsistent choice.
    """
    from .session import ROLES, role_names

    models_file = load_models_file(config_file, cwd=cwd)
    model = model or _env("PROOFSMITH_MODEL")
    fields = models_file.config_for(model, need_key=api_key is None) if models_file else None
    urls = [base_urls] if isinstance(base_urls, str) else list(base_urls or [])
    if fields is None:  # a model not in the file: arguments and environment only
        if not urls and (env := _env("PROOFSMITH_BASE_URL")):
            urls = [u.strip() for u in env.split(",") if u.strip()]
        if model is None:
            if urls:
                raise UserError("--model is required with --base-url (the model name the server serves)")
            model = EMBEDDED
        fields = {"model": model, "roles": {}}
    if api_key:
        check_api_key(api_key, "--api-key")
    elif not (api_key := fields.get("api_key")):  # a models file's key is checked by config_for
        var = next((v for v in ("PROOFSMITH_API_KEY", "OPENAI_API_KEY") if os.environ.get(v)), None)
        if var:
            api_key = check_api_key(os.environ[var], f"the environment variable {var}")
    if api_key:
        fields["api_key"] = api_key
    if urls:
        fields["base_urls"] = urls
    if fields["model"] == EMBEDDED and fields.get("base_urls"):
        raise UserError("--model embedded runs the bundled model locally; drop --base-url or name the server's model")
    roles = {r: s.model_dump(exclude_none=True) for r, s in fields.get("roles", {}).items()}
    for name, value in (settings or {}).items():
        if value is None:
            continue
        if name == "prices":
            base = fields.get("prices") or Prices()
            given = value.model_dump(exclude_unset=True) if isinstance(value, Prices) else dict(value)
            fields["prices"] = base.model_copy(update={k: v for k, v in given.items() if v is not None})
            continue
        if name not in ModelConfig.model_fields or name in ("model", "base_urls", "api_key", "roles"):
            raise UserError(f"unknown model setting {name!r}")
        fields[name] = value
        for per_role in roles.values():
            per_role.pop(name, None)
    given = role_settings or {}
    for exact in (False, True):  # aliases first, then the roles named exactly
        for key, values in given.items():
            try:
                targets = role_names(key)
            except ValueError as e:
                raise UserError(str(e)) from None
            if (key in ROLES) == exact:
                for role in targets:
                    roles.setdefault(role, {}).update({k: v for k, v in values.items() if v is not None})
    fields["roles"] = roles
    try:
        return ModelConfig(**fields)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(map(str, first["loc"]))
        msg = str(first["msg"]).removeprefix("Value error, ")
        raise UserError(f"{where}: {msg}" if where else msg) from None
