"""Commands about who may use the dashboard: `user`, `token`, `revoke`, `api-key`."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from livedash.cli import DbOption, app, console, migrate_database, settings_for
from livedash.errors import LivedashError
from livedash.store.models import Role

RoleOption = Annotated[Role, typer.Option(help="super_admin, admin or viewer.")]
Username = Annotated[str, typer.Argument(help="The user name (the `sub` of its tokens).")]

user_app = typer.Typer(
    help="Manage the dashboard's users: who may sign in, with which role and departments.",
    no_args_is_help=True,
)
app.add_typer(user_app, name="user")


@user_app.command("add")
def user_add(
    username: Username,
    role: RoleOption = Role.VIEWER,
    department: Annotated[
        list[str] | None,
        typer.Option("--department", "-d", help="Department code it may see (repeatable)."),
    ] = None,
    inactive: Annotated[
        bool, typer.Option("--inactive", help="Keep the user but refuse its tokens.")
    ] = False,
    db: DbOption = None,
) -> None:
    """Create a dashboard user, or update its role, departments and whether it is active.

    Writes one row of the users table. A viewer or admin sees only the departments named
    here; a super_admin sees the whole hospital. Give it a password with `livedash user
    password` so that it can sign in on the page.

    Example: livedash user add nurse.ann --role viewer -d ED -d CARD
    """
    from livedash.auth.users import run_save_user

    settings = settings_for(db)
    migrate_database(settings)
    departments = department or ()
    created = asyncio.run(run_save_user(settings, username, role, departments, active=not inactive))
    console.print(
        f"{'Created' if created else 'Updated'} {username!r}: {role.value}, "
        f"departments {', '.join(departments) or '-'}{', inactive' if inactive else ''}."
    )


@user_app.command("list")
def user_list(db: DbOption = None) -> None:
    """List the users: role, departments, whether enabled, and when each last signed in.

    Reads the users table (and the sign-in sessions, for the last sign-in); changes nothing.
    "never" means it has not signed in with a password (it may still use tokens).

    Example: livedash user list
    """
    from livedash.auth.users import run_list_users

    settings = settings_for(db)
    migrate_database(settings)
    table = Table()
    table.add_column("user", overflow="fold")  # what the other commands take: never cut
    table.add_column("role", no_wrap=True)
    table.add_column("departments", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("password", no_wrap=True)
    table.add_column("last sign-in (UTC)", no_wrap=True)
    for user in asyncio.run(run_list_users(settings)):
        table.add_row(
            escape(user.username),
            user.role,
            "all" if user.role == Role.SUPER_ADMIN else ", ".join(user.departments) or "none",
            "enabled" if user.active else "disabled",
            "set" if user.has_password else "none",
            f"{user.last_sign_in:%Y-%m-%d %H:%M}" if user.last_sign_in else "never",
        )
    Console().print(table)


@user_app.command("disable")
def user_disable(username: Username, db: DbOption = None) -> None:
    """Disable a user: it can no longer sign in, and its tokens and sessions are refused.

    Sets the user inactive and signs it out everywhere: every request with a token it holds
    is refused from now on, and its open dashboards lose their connection within
    LIVEDASH_AUTH_RECHECK_SECONDS. The row stays (for the audit trail); `livedash user
    enable` lets it sign in again, with new sessions only.

    Example: livedash user disable nurse.ann
    """
    _set_active(username, active=False, db=db)


@user_app.command("enable")
def user_enable(username: Username, db: DbOption = None) -> None:
    """Enable a disabled user again: it may sign in anew (its old tokens stay refused).

    Example: livedash user enable nurse.ann
    """
    _set_active(username, active=True, db=db)


def _set_active(username: str, *, active: bool, db: DbOption) -> None:
    from livedash.auth.users import run_set_active

    settings = settings_for(db)
    migrate_database(settings)
    if not asyncio.run(run_set_active(settings, username, active=active)):
        console.print(f"There is no user named {username!r} (see `livedash user list`).")
        raise typer.Exit(1)
    if active:
        console.print(f"Enabled {username!r}: it may sign in again.")
    else:
        console.print(
            f"Disabled {username!r}: its sign-in, tokens and sessions are refused from now on."
        )


@user_app.command("password")
def user_password(
    username: Annotated[str, typer.Argument(help="The user (a row of the users table).")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    db: DbOption = None,
) -> None:
    """Set a user's password for the dashboard's sign-in (asks for it twice).

    Stores only its argon2id hash. Sessions already open go on; to end them, use
    `livedash revoke --user NAME`.

    Example: livedash user password nurse.ann   (or: ... --password-stdin < file)
    """
    from livedash.auth.sessions import run_set_password

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise typer.BadParameter("the password is empty")
    settings = settings_for(db)
    migrate_database(settings)
    try:
        done = asyncio.run(run_set_password(settings, username, password))
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    if not done:
        console.print(f"There is no user named {username!r}.")
        raise typer.Exit(1)
    console.print(f"Set the password of {username!r}.")


@app.command()
def token(
    role: RoleOption = Role.SUPER_ADMIN,
    department: Annotated[
        list[str] | None, typer.Option("--department", "-d", help="Department code (repeatable).")
    ] = None,
    sub: Annotated[str, typer.Option(help="Subject (user name) of the token.")] = "cli-user",
    minutes: Annotated[
        int | None,
        typer.Option(min=1, help="Lifetime in minutes (default: LIVEDASH_TOKEN_MINUTES)."),
    ] = None,
    db: DbOption = None,
) -> None:
    """Print a signed access token, for scripts and API clients (only the token, on stdout).

    Signs with the configured key (LIVEDASH_JWT_SECRET, or the key file). The service accepts
    it only for an active user of the users table, and never for more than that user's row
    allows; a warning says so when the user does not exist or is disabled.

    Example: curl -H "Authorization: Bearer $(livedash token --sub ann --role viewer -d ED)" ...
    """
    from livedash.auth.tokens import issue_token
    from livedash.auth.users import run_find_user

    settings = settings_for(db)
    if settings.check_users:
        migrate_database(settings)
        if not asyncio.run(run_find_user(settings, sub)):
            console.print(
                f"Note: {sub!r} is not an active user, so the service will refuse this token; "
                f"add it with `livedash user add {sub} --role {role.value}` first."
            )
    typer.echo(issue_token(settings, sub, role, department or (), minutes=minutes))


@app.command()
def revoke(
    user: Annotated[
        str | None, typer.Option(help="Sign this user out: refuse every token they hold now.")
    ] = None,
    jti: Annotated[
        str | None, typer.Option(help="Refuse the one token with this ID (its jti claim).")
    ] = None,
    reason: Annotated[
        str, typer.Option(help="Why, kept with a revoked token ID.")
    ] = "revoked with livedash revoke",
    db: DbOption = None,
) -> None:
    """Revoke access tokens: all of a user's, or one by its ID; refused from their next use.

    Open dashboards using them lose their connection within LIVEDASH_AUTH_RECHECK_SECONDS.
    The user stays enabled and may sign in again (`livedash user disable` stops that too).

    Example: livedash revoke --user nurse.ann
    """
    from livedash.auth.users import run_revoke

    if (user is None) == (jti is None):
        raise typer.BadParameter("give either --user or --jti")
    settings = settings_for(db)
    migrate_database(settings)
    if not asyncio.run(run_revoke(settings, user=user, jti=jti, reason=reason)):
        console.print(f"There is no user named {user!r}.")
        raise typer.Exit(1)
    console.print(f"Revoked the tokens of {user!r}." if user else f"Revoked token {jti!r}.")


api_key_app = typer.Typer(
    help="API keys for machine writers (the hospital's main application posting to ingest).",
    no_args_is_help=True,
)
app.add_typer(api_key_app, name="api-key")


@api_key_app.command("create")
def api_key_create(
    name: Annotated[str, typer.Argument(help="A name for the key, such as the writer's.")],
    scope: Annotated[
        list[str] | None,
        typer.Option(
            help="What the key may do (repeatable): ingest (post changes, the default) or "
            "dashboard (a wall screen signs in as --user)."
        ),
    ] = None,
    user: Annotated[
        str | None,
        typer.Option(help="The user a dashboard key signs in as (a viewer or an admin)."),
    ] = None,
    db: DbOption = None,
) -> None:
    """Create an API key and print it once: store it in the writer's configuration now.

    Only its hash is kept in the api_keys table, so it cannot be shown again. An `ingest`
    key lets the hospital's application post changes; a `dashboard` key lets a wall screen
    sign in as --user without a person typing a password.

    Example: livedash api-key create main-app --scope ingest
    """
    from livedash.auth.api_keys import run_create_api_key

    settings = settings_for(db)
    migrate_database(settings)
    try:
        key = asyncio.run(run_create_api_key(settings, name, scope or ["ingest"], user))
    except LivedashError as error:
        console.print(f"Cannot create the key: {error}")
        raise typer.Exit(1) from None
    typer.echo(key)
    console.print(
        f"API key {name!r} created. It is shown only this once and cannot be shown again; "
        "if it is lost, revoke it and create another."
    )


@api_key_app.command("revoke")
def api_key_revoke(
    name: Annotated[str, typer.Argument(help="The key's name, as `livedash api-key list` shows.")],
    db: DbOption = None,
) -> None:
    """Revoke an API key: requests using it are refused from now on.

    Example: livedash api-key revoke main-app
    """
    from livedash.auth.api_keys import run_revoke_api_key

    settings = settings_for(db)
    migrate_database(settings)
    if not asyncio.run(run_revoke_api_key(settings, name)):
        console.print(f"There is no active API key named {name!r}.")
        raise typer.Exit(1)
    console.print(f"Revoked the API key {name!r}.")


@api_key_app.command("list")
def api_key_list(db: DbOption = None) -> None:
    """List the API keys (never their secrets): name, prefix, scopes and when last used.

    Example: livedash api-key list
    """
    from livedash.auth.api_keys import run_list_api_keys

    settings = settings_for(db)
    migrate_database(settings)
    table = Table()
    table.add_column("name", overflow="fold")  # a name is what `revoke` takes: never cut
    table.add_column("prefix", no_wrap=True)
    table.add_column("scopes", overflow="fold")
    table.add_column("user", overflow="fold")
    for heading in ("created", "last used", "revoked"):
        table.add_column(f"{heading} (UTC)")
    for key in asyncio.run(run_list_api_keys(settings)):
        table.add_row(
            key.name,
            key.prefix,
            ", ".join(key.scopes),
            key.username or "",
            f"{key.created_at:%Y-%m-%d %H:%M}",
            f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never",
            f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "",
        )
    Console().print(table)
