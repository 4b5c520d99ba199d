/**
 * A tiny 5×7 bitmap font for labels burnt into PNGs (reconstruction grids). Drawing pixels ourselves keeps the
 * output identical on every machine (no system fonts, no SVG text rendering).
 */

const G: Record<string, string> = {
  a: '..... ..... .###. ....# .#### #...# .####',
  b: '#.... #.... ####. #...# #...# #...# ####.',
  c: '..... ..... .#### #.... #.... #.... .####',
  d: '....# ....# .#### #...# #...# #...# .####',
  e: '..... ..... .###. #...# ##### #.... .###.',
  f: '..##. .#... ####. .#... .#... .#... .#...',
  g: '..... ..... .#### #...# .#### ....# .###.',
  h: '#.... #.... ####. #...# #...# #...# #...#',
  i: '..#.. ..... .##.. ..#.. ..#.. ..#.. .###.',
  j: '...#. ..... ..##. ...#. ...#. #..#. .##..',
  k: '#.... #.... #..#. #.#.. ##... #.#.. #..#.',
  l: '.##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###.',
  m: '..... ..... ##.#. #.#.# #.#.# #.#.# #.#.#',
  n: '..... ..... ####. #...# #...# #...# #...#',
  o: '..... ..... .###. #...# #...# #...# .###.',
  p: '..... ..... ####. #...# ####. #.... #....',
  q: '..... ..... .#### #...# .#### ....# ....#',
  r: '..... ..... #.##. ##..# #.... #.... #....',
  s: '..... ..... .#### #.... .###. ....# ####.',
  t: '.#... .#... ####. .#... .#... .#..# ..##.',
  u: '..... ..... #...# #...# #...# #..## .##.#',
  v: '..... ..... #...# #...# #...# .#.#. ..#..',
  w: '..... ..... #...# #...# #.#.# #.#.# .#.#.',
  x: '..... ..... #...# .#.#. ..#.. .#.#. #...#',
  y: '..... ..... #...# #...# .#### ....# .###.',
  z: '..... ..... ##### ...#. ..#.. .#... #####',
  '0': '.###. #...# #..## #.#.# ##..# #...# .###.',
  '1': '..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.',
  '2': '.###. #...# ....# ...#. ..#.. .#... #####',
  '3': '##### ...#. ..#.. ...#. ....# #...# .###.',
  '4': '...#. ..##. .#.#. #..#. ##### ...#. ...#.',
  '5': '##### #.... ####. ....# ....# #...# .###.',
  '6': '..##. .#... #.... ####. #...# #...# .###.',
  '7': '##### ....# ...#. ..#.. .#... .#... .#...',
  '8': '.###. #...# #...# .###. #...# #...# .###.',
  '9': '.###. #...# #...# .#### ....# ...#. .##..',
  '.': '..... ..... ..... ..... ..... .##.. .##..',
  ':': '..... .##.. .##.. ..... .##.. .##.. .....',
  '=': '..... ..... ##### ..... ##### ..... .....',
  '-': '..... ..... ..... ##### ..... ..... .....',
  ' ': '..... ..... ..... ..... ..... ..... .....',
};

export const GLYPH_W = 5;
export const GLYPH_H = 7;
/** Horizontal advance per character (glyph + 1 column of spacing), before scaling. */
export const ADVANCE = GLYPH_W + 1;

const ROWS: Map<string, string[]> = new Map(Object.entries(G).map(([c, s]) => [c, s.split(' ')]));

/** Width in pixels of `text` at `scale` (no trailing spacing). */
export function textWidth(text: string, scale = 1): number {
  return text.length === 0 ? 0 : (text.length * ADVANCE - 1) * scale;
}

/**
 * Draw `text` into an interleaved RGB buffer of width `bufW` with its top-left corner at (x, y); pixels outside the
 * buffer are clipped. Unknown characters are drawn as blanks; letters are case-folded.
 */
export function drawText(
  buf: Uint8Array,
  bufW: number,
  bufH: number,
  x: number,
  y: number,
  text: string,
  color: readonly [number, number, number],
  scale = 1,
): void {
  let cx = x;
  for (const ch of text.toLowerCase()) {
    const rows = ROWS.get(ch);
    if (rows) {
      for (let gy = 0; gy < GLYPH_H; gy++) {
        const row = rows[gy]!;
        for (let gx = 0; gx < GLYPH_W; gx++) {
          if (row[gx] !== '#') continue;
          for (let sy = 0; sy < scale; sy++) {
            const py = y + gy * scale + sy;
            if (py < 0 || py >= bufH) continue;
            for (let sx = 0; sx < scale; sx++) {
              const px = cx + gx * scale + sx;
              if (px < 0 || px >= bufW) continue;
              const o = (py * bufW + px) * 3;
              buf[o] = color[0];
              buf[o + 1] = color[1];
              buf[o + 2] = color[2];
            }
          }
        }
      }
    }
    cx += ADVANCE * scale;
  }
}
