"""The `tether policy` commands: check a policy directory before deploying it."""

from __future__ import annotations

from pathlib import Path

import click

from tether.policy.loader import PolicyError, load_policy_dir


# The help text's "\b" is the backspace character on purpose: click's "keep this paragraph's
# line breaks" marker, so the example is printed as written.
@click.command("validate")
@click.argument("directory", metavar="DIR", type=click.Path(path_type=Path))
@click.pass_context
def validate(ctx: click.Context, directory: Path) -> None:
    """Check the Cedar policies in DIR the way tether will load them.

    Every *.cedar file in DIR is parsed, its policies' @id (required, unique across files)
    and @severity (low, medium, high or critical) annotations are checked, and each policy
    is validated against DIR/*.cedarschema if there is one, else tether's built-in schema.

    Prints each problem as FILE: problem and exits 1, or prints a summary with the pack's
    revision (the value recorded with each decision) and exits 0.

    \b
    Example:
      $ tether policy validate ./policies
      ok: 2 policies (acme.base.permit, acme.no-weekend-deletes) revision 5d0c9e61a2b7

    Environment: none (deploy the directory with TETHER_POLICY_DIR).
    """
    try:
        pack = load_policy_dir(directory)
    except PolicyError as exc:
        for problem in exc.problems:
            click.echo(problem)
        click.echo(f"{len(exc.problems)} problem(s) in {directory}", err=True)
        ctx.exit(1)
    ids = ", ".join(pack.policy_ids)
    click.echo(f"ok: {len(pack.policy_ids)} policies ({ids}) revision {pack.revision}")


@click.group("policy")
def policy() -> None:
    """Work with tether's per-call Cedar policies."""


policy.add_command(validate)
