"""Render the ORL glasses labels as a contact sheet, so anyone can audit them by eye.

Each of the 400 faces is drawn with its label (green "G" = glasses, grey "-" = none), two
people per row. Usage:
    python scripts/render_contact_sheet.py --out docs/orl-glasses-contact-sheet.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

from dlfd.data.orl import N_IMAGES, orl_records

THUMB_W, THUMB_H = 46, 56
LABEL_W = 34
PEOPLE_PER_ROW = 2
BLOCK_W = LABEL_W + N_IMAGES * THUMB_W


def render(out: Path) -> tuple[int, int]:
    """Draw the sheet to ``out``; returns (glasses images, total images)."""
    records = orl_records("glasses")
    people = records.unique_identities()
    people.sort(key=lambda p: int(p[1:]))
    rows = -(-len(people) // PEOPLE_PER_ROW)
    sheet = Image.new("RGB", (PEOPLE_PER_ROW * BLOCK_W, rows * THUMB_H), "white")
    draw = ImageDraw.Draw(sheet)
    origin = {
        p: ((r % PEOPLE_PER_ROW) * BLOCK_W, (r // PEOPLE_PER_ROW) * THUMB_H)
        for r, p in enumerate(people)
    }
    for i, key in enumerate(records.paths):
        person = records.identities[i]
        col = int(Path(key).stem) - 1
        x, y = origin[person][0] + LABEL_W + col * THUMB_W, origin[person][1]
        with Image.open(records.abspath(i)) as img:
            thumb = img.convert("RGB").resize((THUMB_W - 2, THUMB_H - 2))
        sheet.paste(thumb, (x + 1, y + 1))
        wears = bool(records.labels[i])
        colour = (0, 200, 0) if wears else (160, 160, 160)
        draw.rectangle([x + 1, y + 1, x + 13, y + 12], fill=(0, 0, 0))
        draw.text((x + 3, y + 1), "G" if wears else "-", fill=colour)
        if wears:
            draw.rectangle([x, y, x + THUMB_W - 1, y + THUMB_H - 1], outline=colour)
    for person, (x, y) in origin.items():
        draw.text((x + 4, y + THUMB_H // 2 - 5), person, fill=(0, 0, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=128).save(out, optimize=True)
    return int(records.labels.sum()), len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/orl-glasses-contact-sheet.png"))
    args = parser.parse_args()
    glasses, total = render(args.out)
    print(f"wrote {args.out}: {glasses} of {total} images labelled 'glasses'")


if __name__ == "__main__":
    main()
