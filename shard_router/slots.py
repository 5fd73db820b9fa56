import zlib

# Fixed for the life of a deployment: changing it re-homes every account.
SLOT_COUNT = 4096


def slot_of(account_id: str) -> int:
    """The slot of an account: CRC32 of its UTF-8 id. Stable across processes and
    machines (Python's hash() is salted per process and must never route)."""
    assert isinstance(account_id, str) and account_id, "account_id must be a non-empty string"
    return zlib.crc32(account_id.encode("utf-8")) % SLOT_COUNT
