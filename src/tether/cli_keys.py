"""``tether keys generate|rotate``: the keys that sign revocations (mounted by ``tether.cli``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from tether.security.keys import KeyFiles

_dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Key directory [default: $TETHER_HOME/keys, i.e. .tether/keys].",
)
_alg_option = click.option(
    "--alg",
    type=click.Choice(["RS256", "ES256"]),
    help="RS256 (RSA, the CAEP interoperability profile; generate's default) or ES256 (P-256).",
)
_issuer_option = click.option(
    "--issuer",
    help="Bind the key to this issuer (an 'iss' member: watchers accept it for no other) "
    "[default: TETHER_ISSUER, i.e. urn:tether:monitor; rotate: the current key's].",
)
_bits_option = click.option(
    "--bits",
    type=click.IntRange(min=2048),
    default=2048,
    show_default=True,
    help="RSA modulus size (RS256 only).",
)


def _directory(directory: Path | None) -> Path:
    if directory is not None:
        return directory
    from tether.security.keys import dev_keys_dir  # noqa: PLC0415  # keep `tether --help` fast
    from tether.settings import Settings  # noqa: PLC0415

    return dev_keys_dir(Settings())


def _report(verb: str, files: KeyFiles) -> None:
    click.echo(f"{verb} {files.alg} key {files.kid}")
    click.echo(f"  private key  {files.private_key}  (mode 0600: the worker's; keep it secret)")
    click.echo(f"  public JWKS  {files.jwks}  (give it to gateways, or serve it over https)")


@click.group()
def keys() -> None:
    """Keys that sign revocations and heartbeats.

    The worker signs every record it publishes to tether.revocations as a Security Event
    Token (a JWS, RFC 8417); gateways' watchers accept only records signed by a key in their
    JWKS, with the configured issuer, so nobody who can merely write to the topic can forge or
    lift a revocation, or fake a live feed.

    \b
    Production:
      tether keys generate --dir /etc/tether/keys
      worker:   TETHER_SIGNING_KEY=/etc/tether/keys/signing.jwk.json
      gateways: TETHER_JWKS=/etc/tether/keys/jwks.json   (or https://.../jwks.json)
      both:     TETHER_ISSUER=urn:tether:monitor         (the default)
    With neither set, a development key pair is created once under .tether/keys (or
    $TETHER_HOME/keys) and used by both sides, with a warning.

    \b
    Example:
      tether keys generate --dir /etc/tether/keys
    """


@keys.command("generate")
@_dir_option
@_alg_option
@_bits_option
@_issuer_option
@click.option("--force", is_flag=True, help="Replace an existing pair (its SETs stop verifying).")
def generate(  # one parameter per option
    directory: Path | None, alg: str | None, bits: int, issuer: str | None, force: bool
) -> None:
    """Create a signing key pair: DIR/signing.jwk.json (private) and DIR/jwks.json (public).

    The key id (kid) is the key's RFC 7638 thumbprint. Refuses to overwrite an existing key
    unless --force; to change keys without breaking verification use `tether keys rotate`.

    \b
    Examples:
      tether keys generate                          # into .tether/keys
      tether keys generate --dir /etc/tether/keys --alg ES256

    Environment: TETHER_HOME (.tether), the default directory's parent.
    """
    from tether.security.keys import generate_files, keep_out_of_git  # noqa: PLC0415
    from tether.settings import Settings  # noqa: PLC0415

    where = _directory(directory)
    bound = issuer or Settings().issuer
    try:
        files = generate_files(where, alg or "RS256", bits=bits, force=force, issuer=bound)  # type: ignore[arg-type]  # a click.Choice
        if directory is None:
            keep_out_of_git(where)
    except (FileExistsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot write keys in {where}: {exc.strerror}") from exc
    _report("generated", files)
    click.echo(f"TETHER_SIGNING_KEY={files.private_key}")
    click.echo(f"TETHER_JWKS={files.jwks}")


@keys.command("rotate")
@_dir_option
@_alg_option
@_bits_option
@_issuer_option
def rotate(directory: Path | None, alg: str | None, bits: int, issuer: str | None) -> None:
    """Sign with a new key from now on, keeping the old public keys in the JWKS.

    Adds the new public key to DIR/jwks.json first, then replaces DIR/signing.jwk.json. Old
    public keys stay, so revocations signed before the rotation (the compacted topic keeps
    them until their not_after) still verify. Watchers learn the new kid without a restart: an
    unknown kid makes them reread the JWKS (at most once per TETHER_JWKS_REFETCH_S, default
    10 s; records meanwhile wait, they are not dropped).

    \b
    Then:
      1. publish the new jwks.json where gateways read it (if it is not this file);
      2. restart the workers, so they sign with the new key;
      3. remove an old key from jwks.json only once the last revocation it signed has passed
         its not_after: a gateway starting later would reject that revocation.

    --alg defaults to the current key's algorithm.

    \b
    Example:
      tether keys rotate --dir /etc/tether/keys

    Environment: TETHER_HOME (.tether), the default directory's parent.
    """
    from tether.security.keys import rotate_files  # noqa: PLC0415

    where = _directory(directory)
    try:
        files = rotate_files(where, alg, bits=bits, issuer=issuer)  # type: ignore[arg-type]  # a click.Choice
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot rotate keys in {where}: {exc.strerror}") from exc
    _report("now signing with", files)


@keys.command("source")
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Where the source's key files go (next to sources.yaml).",
)
def source(name: str, directory: Path) -> None:
    """Give the telemetry source NAME a new HS256 key (docs/SECURITY.md).

    Writes DIR/NAME.jwk.json, the key its emitters sign with (SourceKey.load), and adds the
    key to DIR/NAME.jwks.json, the key set sources.yaml names for NAME. Both are secrets (mode
    0600). Run it again to rotate: the key set keeps the old key until you remove it, once
    every emitter signs with the new one.

    Environment: none (the worker and `tether replay` find the key set through TETHER_SOURCES).

    \b
    Example:
      tether keys source planners --dir /etc/tether/sources
    """
    from tether.security.keys import read_jwks, write_secret_jwks  # noqa: PLC0415
    from tether.security.proof import SourceKey  # noqa: PLC0415

    key = SourceKey.generate(name)
    keyset = directory / f"{name}.jwks.json"
    mine = directory / f"{name}.jwk.json"
    try:
        keys_now = read_jwks(keyset)
        write_secret_jwks(keyset, [*keys_now, key.jwk()])
        write_secret_jwks(mine, [key.jwk()])
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot write {name}'s keys in {directory}: {exc}") from exc
    click.echo(f"source {name}: new key {key.kid} ({len(keys_now) + 1} in its key set)")
    click.echo(f"  key set  {keyset}  (sources.yaml: keys: {keyset.name})")
    click.echo(f"  emitter  {mine}  (SourceKey.load({name!r}, path))")


@keys.command("operator")
@click.option(
    "--out",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the key pair goes [default: $TETHER_HOME/operator, i.e. .tether/operator].",
)
@click.option("--name", help="The operator the key belongs to [default: $USER].")
@_alg_option
@click.option("--force", is_flag=True, help="Replace this directory's private key.")
def operator(directory: Path | None, name: str | None, alg: str | None, force: bool) -> None:
    """Create an operator key pair: DIR/operator.jwk.json (private, 0600) and DIR/jwks.json.

    Operators sign `tether revoke` and `tether reinstate` with it. It is bound to the
    operators' issuer (TETHER_OPERATOR_ISSUER, urn:tether:operator), never the worker's:
    watchers accept a reinstatement only from a key in TETHER_OPERATOR_JWKS, so a stolen
    worker key cannot lift a revocation. Another operator's key goes into the same JWKS: run
    it with the same --out on a copy of the JWKS, or merge the files.

    \b
    Then:
      operator CLI:                TETHER_OPERATOR_KEY=DIR/operator.jwk.json
      watchers, worker, SSF:       TETHER_OPERATOR_JWKS=DIR/jwks.json (or https://.../jwks.json)

    \b
    Example:
      tether keys operator --out ~/.tether-operator --name alice

    Environment: TETHER_HOME (.tether), TETHER_OPERATOR_ISSUER, $USER (the default --name).
    """
    import os  # noqa: PLC0415

    from tether.security.operators import generate_operator_files, operator_dir  # noqa: PLC0415
    from tether.settings import Settings  # noqa: PLC0415

    settings = Settings()
    where = directory or operator_dir(settings)
    who = (name or os.environ.get("USER") or "").strip()
    if not who:
        raise click.ClickException("give the operator's --name (no $USER)")
    try:
        files = generate_operator_files(
            where,
            name=who,
            issuer=settings.operator_issuer,
            alg=alg or "RS256",  # type: ignore[arg-type]  # a click.Choice
            force=force,
        )
    except (FileExistsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot write keys in {where}: {exc.strerror}") from exc
    click.echo(f"operator {files.name}: key {files.kid} (issuer {settings.operator_issuer})")
    click.echo(f"  private key  {files.private_key}  (mode 0600: the operator's; keep it secret)")
    click.echo(f"  public JWKS  {files.jwks}  (give it to watchers, the worker and SSF)")
    click.echo(f"TETHER_OPERATOR_KEY={files.private_key}")
    click.echo(f"TETHER_OPERATOR_JWKS={files.jwks}")
