"""PostgreSQL on the stack's `database` node: version, where its data lives, the apps' databases, backups."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator

from .base import Cidr, _Model, not_everyone

# PostgreSQL's identifiers as the program writes them: lowercase, so no quoting is needed anywhere.
IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
RESERVED_ROLES = ("postgres", "public")
# Major versions each OS family's own repositories carry (Debian 12: 15 only; EL9: the postgresql module streams).
VERSIONS_BY_OS = {"debian12": (15,), "rocky9": (15, 16), "alma9": (15, 16)}


class AppDatabase(_Model):
    name: str = Field(description="Database name: lowercase letters, digits, `_`.")
    owner: str = Field(description="The role the app logs in as (owns the database); its password is generated (stack output `database`).")

    @field_validator("name", "owner")
    @classmethod
    def _ident(cls, v: str) -> str:
        if not IDENT.match(v):
            raise ValueError(f"{v!r} is not a lowercase identifier (a-z, 0-9, _; at most 63)")
        if v in RESERVED_ROLES or v.startswith("pg_"):
            raise ValueError(f"{v!r} is PostgreSQL's own; give the app a name of its own")
        return v


class DatabaseBackup(_Model):
    time: str = Field(default="02:30", description="Daily `pg_dump` of every database at this time (HH:MM, the node's clock: UTC).")
    keep_days: int = Field(default=7, ge=1, le=3650, description="Dumps older than this many days are deleted after each backup.")

    @field_validator("time")
    @classmethod
    def _time(cls, v: str) -> str:
        m = re.match(r"^([01][0-9]|2[0-3]):([0-5][0-9])$", v)
        if not m:
            raise ValueError(f"{v!r} is not a time like 02:30 (24-hour HH:MM)")
        return v


class DatabaseConfig(_Model):
    version: int = Field(default=15, description="PostgreSQL major version, from the node OS's packages: Debian 12 carries 15; Rocky/Alma 9 15 or 16 (module streams). A data directory of another version is refused, never upgraded.")
    data: Literal["nfs", "local"] = Field(
        default="nfs",
        description="`nfs`: the data directory on the storage node's NFS disk (an export of its own, to this node only); `local`: on the node's first data disk, else its root disk.",
    )
    databases: tuple[AppDatabase, ...] = Field(
        default=(AppDatabase(name="app", owner="app"),), min_length=1, description="The apps' databases, each with its owner role."
    )
    clients: Annotated[tuple[Cidr, ...], not_everyone("the database would take logins from anywhere; list the networks")] = Field(
        default=(), description="Networks (CIDR) whose clients may log in besides the K3s networks' (over TLS, with the owner's password)."
    )
    max_connections: int = Field(default=100, ge=10, le=10000, description="PostgreSQL's max_connections.")
    backup: DatabaseBackup = Field(default=DatabaseBackup(), description="Daily dumps, to the storage node's NFS disk (or the node's own disk without a storage node).")
    password_keeper: str = Field(default="", description="Change it to generate new passwords for the owners and the superuser (the apps must be given the new ones).")

    @field_validator("databases")
    @classmethod
    def _unique(cls, v: tuple[AppDatabase, ...]) -> tuple[AppDatabase, ...]:
        names = [d.name for d in v]
        if len(set(names)) != len(names):
            raise ValueError("a database is named twice")
        return v
