"""What an H.264 packet in MP4 (avcC) form says about itself, read from its NAL unit headers
without decoding: which slices it holds, whether any other frame references it."""
from __future__ import annotations

SLICE_TYPES = (1, 5)  # coded slice of a non-IDR picture, of an IDR picture


def avcc_length_size(stream) -> int | None:
    """NAL length-prefix size of an H.264 stream in MP4 (avcC) form; None for anything else."""
    extra = stream.codec_context.extradata
    if stream.codec_context.name != "h264" or not extra or extra[0] != 1 or len(extra) < 5:
        return None
    return (extra[4] & 3) + 1


def slice_headers(packet, length_size: int) -> list[int]:
    """NAL header bytes of the coded slices (non-IDR type 1, IDR type 5) in an avcC packet."""
    data = memoryview(packet)
    i, headers = 0, []
    while i + length_size < len(data):
        size = int.from_bytes(data[i:i + length_size], "big")
        header = data[i + length_size]
        if header & 0x1F in SLICE_TYPES:
            headers.append(header)
        i += length_size + size
    return headers


def is_disposable(packet, length_size: int) -> bool:
    """True when every slice in the packet has nal_ref_idc 0: no other frame references it."""
    headers = slice_headers(packet, length_size)
    return bool(headers) and not any(h & 0x60 for h in headers)


def is_idr(packet, length_size: int) -> bool:
    return any(h & 0x1F == 5 for h in slice_headers(packet, length_size))


def slices_per_picture(stream, packet) -> int:
    """Slices in `packet`'s picture for H.264 in MP4 (one packet holds one picture); 1 for any
    other stream, where it is not read."""
    length_size = avcc_length_size(stream)
    return max(1, len(slice_headers(packet, length_size))) if length_size else 1
