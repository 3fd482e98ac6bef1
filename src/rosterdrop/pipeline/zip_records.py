"""The ZIP records both the upload reader (``archive.py``) and the ASM writer use.

Layouts from PKWARE's APPNOTE: every multi-byte field is little-endian.
"""

from __future__ import annotations

import struct

LOCAL_HEADER = struct.Struct("<4s5HL2L2H")  # one local file header
LOCAL_SIG = b"PK\x03\x04"
CENTRAL_HEADER = struct.Struct("<4s4B4HL2L5H2L")  # one central directory header
CENTRAL_SIG = b"PK\x01\x02"
END_RECORD = struct.Struct("<4s4H2LH")  # end of central directory record
END_SIG = b"PK\x05\x06"
ZIP32_LIMIT = 0xFFFFFFFF
"""Sizes and offsets at or above this need ZIP64 records."""
