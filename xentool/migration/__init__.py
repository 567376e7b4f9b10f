"""Moving a running guest to another host: the source's end (:mod:`xentool.migration.send`), the
target's (:mod:`xentool.migration.receive`), and what they say to each other
(:mod:`xentool.migration.protocol`)."""

from xentool.migration.receive import receive
from xentool.migration.send import MigrationResult, migrate_guest

__all__ = ["MigrationResult", "migrate_guest", "receive"]
