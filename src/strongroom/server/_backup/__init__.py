"""Backup and restore of a data directory on the embedded default (SQLite).

An archive is a gzip-compressed tar holding exactly these members, manifest first::

    strongroom-backup.json   the manifest: format, time, organisation, schema version,
                             counts, and the SHA-256 of every other member
    strongroom.toml          the configuration
    strongroom.db            a consistent copy of the database
    authority.pem            the authority key (unless left out on purpose)
    admin.token              the admin credential, if the directory has one
    blobs/<id[:2]>/<id>      each attachment blob the copy names as complete

Rules:

1. A backup is consistent while the server runs: SQLite's online backup API copies the
   database in one step, that is inside one read transaction, which WAL lets run beside the
   server's writer.  The copy must pass ``PRAGMA integrity_check`` before it is archived.
2. A backup never leaves a partial file under its final name: the archive is written to a
   temporary file (mode 0600, since it may hold the authority key) beside ``out``, flushed
   to disk and renamed.  Nothing but SQLite is backed up here: a PostgreSQL database is
   backed up with ``pg_dump`` (docs/deploy.md).
3. The blobs archived are the complete ones the database *copy* names, so files and rows
   agree (blob rule 1: never a row without its bytes).  A blob completed after the
   snapshot is left out, and so are the bytes of uploads in progress: the copy sets their
   ``received`` back to 0, and the uploader starts again instead of meeting a file
   shorter than the count.  A complete blob whose file is gone by the time it is archived
   (pruning deletes a file after its row, so a snapshot can name a file pruned since, or
   the file was lost) does not fail the backup.  It is listed in the manifest's
   ``missing_blobs`` and *its rows are dropped from the copy*: a restored server then says
   "no such attachment" for it, as the live one does, instead of keeping a row whose
   bytes are gone and logging lost data on every download.  Blobs are streamed, never
   read whole: a first pass hashes them (the manifest comes first), the second copies
   them into the tar and checks the hash again.  One that vanishes between the passes is
   dropped as above and the archive written again, at most ``_ATTEMPTS`` times.  An
   archive always holds blobs as ``blobs/``, wherever the blob directory is.
4. A restore validates the whole archive (member names and types, checksums, the database's
   integrity and schema, the configuration, and that the blobs are exactly the complete
   ones the database names, at their sizes) in a staging directory before it writes into
   the target.  Only the names above are accepted, a blob's being its id under its first
   two letters, so no member can land outside the target.  Blobs go where the archived
   configuration's ``[storage] blobs`` says, or to ``blobs`` with a note if that is outside
   the data directory.  The checksums catch damage, not forgery: they are no signature.
5. A restore never writes into the directory of a running server, and into a non-empty
   one only when forced.  Stale ``-wal``/``-shm`` files beside the old database go, since
   SQLite would replay them onto the restored one.

Format 2 added the blobs; a format 1 archive is still restored, with a note if its
database names attachments it does not hold.  ``sqlite3``, ``tarfile`` and gzip errors are
mapped here, to ``ConfigError`` for an archive or directory that is not what it should be
and ``StoreError`` for a database that failed.
"""

from __future__ import annotations

from ._archive import (
    ADMIN_FILE,
    AUTHORITY,
    BLOBS,
    CONFIG,
    DATABASE,
    FORMAT,
    MANIFEST,
    Counts,
    Manifest,
    Restored,
    blob_dir_outside,
)
from ._restore import restore
from ._take import backup

__all__ = [
    "ADMIN_FILE",
    "AUTHORITY",
    "BLOBS",
    "CONFIG",
    "DATABASE",
    "FORMAT",
    "MANIFEST",
    "Counts",
    "Manifest",
    "Restored",
    "backup",
    "blob_dir_outside",
    "restore",
]
