"""FB_MODE / the project's ``framebuffer``: the display resolution the loader asks the firmware for.

The value is ``WIDTHxHEIGHT`` in pixels (``"1024x768"``); empty keeps the mode the firmware set. At
boot the loader switches the firmware's graphics output (GOP) to the largest mode that is not
larger than this in either direction (loader/src/fbmode.rs), before it reads the framebuffer.
"""

from __future__ import annotations

import re

from highboot.errors import HighbootError

#: The largest width or height accepted: room above 8K UHD (7680x4320); more is a typo, not a display.
MAX_SIDE = 16384


def parse_fb_mode(value: object, *, file: str | None = None, field: str = "FB_MODE") -> tuple[int, int] | None:
    """(width, height) from "WIDTHxHEIGHT", None for "" (the firmware's mode); HighbootError otherwise."""
    if not isinstance(value, str):
        raise HighbootError(f'expected a string "WIDTHxHEIGHT" (e.g. "1024x768"), got {type(value).__name__} '
                            f"{value!r}", file=file, field=field)
    if value == "":
        return None
    match = re.fullmatch(r"([0-9]+)x([0-9]+)", value)
    if match is None:
        raise HighbootError(f"{value!r} is not a resolution: expected WIDTHxHEIGHT in decimal pixels (e.g. 1024x768), "
                            "or empty to keep the firmware's mode", file=file, field=field)
    sides = []
    for name, digits in zip(("width", "height"), match.groups(), strict=True):
        number = int(digits) if len(digits) <= 6 else MAX_SIDE + 1
        if not 1 <= number <= MAX_SIDE:
            raise HighbootError(f"{value!r}: the {name} must be 1 to {MAX_SIDE} pixels", file=file, field=field)
        sides.append(number)
    return sides[0], sides[1]

