/**
 * Image folder scanning: the ImageNet layout `root/<class>/**\/*.{jpg,jpeg,png,webp}` (label = index of the class
 * folder in sorted order) or a flat folder of images (no labels). Extensions are case-insensitive, symlinks are
 * followed, and the file order is deterministic (code-unit sorted, like Python's `sorted`).
 */
import { readdirSync, statSync, realpathSync, type Stats } from 'node:fs';
import path from 'node:path';
import { DataError } from '../util/errors.js';

export const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png', '.webp'] as const;

export interface ImageFolder {
  root: string;
  /** Image paths relative to `root`, in the dataset order (class by class, each sorted). */
  files: string[];
  /** Class index of each file (ImageNet layout), or null for a flat folder. */
  labels: Int32Array | null;
  /** Sorted class folder names (ImageNet layout), or null for a flat folder. */
  classes: string[] | null;
}

export function isImageFile(name: string): boolean {
  const ext = path.extname(name).toLowerCase();
  return (IMAGE_EXTENSIONS as readonly string[]).includes(ext);
}

function byCodeUnit(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function statOrNull(p: string): Stats | null {
  try {
    return statSync(p); // follows symlinks
  } catch {
    return null;
  }
}

/** Sorted visible entries of a folder, split into (followed) files and folders. */
function listDir(dir: string): { files: string[]; dirs: string[] } {
  const files: string[] = [];
  const dirs: string[] = [];
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch (e) {
    throw new DataError(`cannot read folder '${dir}': ${(e as Error).message}`);
  }
  for (const ent of entries) {
    if (ent.name.startsWith('.')) continue;
    let isDir = ent.isDirectory();
    let isFile = ent.isFile();
    if (ent.isSymbolicLink()) {
      const st = statOrNull(path.join(dir, ent.name));
      if (!st) continue; // dangling link
      isDir = st.isDirectory();
      isFile = st.isFile();
    }
    if (isDir) dirs.push(ent.name);
    else if (isFile) files.push(ent.name);
  }
  files.sort(byCodeUnit);
  dirs.sort(byCodeUnit);
  return { files, dirs };
}

/** All image files under `dir` (recursive, symlinks followed, loops cut), relative to `base`, sorted per folder. */
function walkImages(dir: string, base: string, out: string[], seen: Set<string>): void {
  let real: string;
  try {
    real = realpathSync(dir);
  } catch {
    return;
  }
  if (seen.has(real)) return;
  seen.add(real);
  const { files, dirs } = listDir(dir);
  for (const f of files) if (isImageFile(f)) out.push(path.relative(base, path.join(dir, f)));
  for (const d of dirs) walkImages(path.join(dir, d), base, out, seen);
  seen.delete(real);
}

function noImages(root: string, what: string): DataError {
  return new DataError(`data.root '${root}' has no images (looked for ${IMAGE_EXTENSIONS.join('/')} in ${what})`);
}

/**
 * Scan an image folder. Subfolders of `root` are class folders (ImageNet layout) when any of them holds images;
 * otherwise the images directly in `root` form a flat, unlabelled dataset. Throws DataError when the folder is
 * missing, not a folder, or has no images.
 */
export function scanImageFolder(root: string): ImageFolder {
  const st = statOrNull(root);
  if (!st) throw new DataError(`data.root '${root}' does not exist`);
  if (!st.isDirectory()) throw new DataError(`data.root '${root}' is not a folder`);
  const abs = path.resolve(root);
  const top = listDir(abs);
  if (top.dirs.length > 0) {
    const files: string[] = [];
    const labels: number[] = [];
    top.dirs.forEach((cls, ci) => {
      const before = files.length;
      walkImages(path.join(abs, cls), abs, files, new Set([realpathSync(abs)]));
      for (let k = before; k < files.length; k++) labels.push(ci);
    });
    if (files.length > 0) return { root: abs, files, labels: Int32Array.from(labels), classes: top.dirs };
  }
  const flat = top.files.filter(isImageFile);
  if (flat.length === 0) throw noImages(root, top.dirs.length > 0 ? `${root} and its ${top.dirs.length} subfolders` : root);
  return { root: abs, files: flat, labels: null, classes: null };
}

/** Number of images `createLoader` would see under `root` (used by the dry-run plan). Throws DataError like it. */
export function countImages(root: string): number {
  return scanImageFolder(root).files.length;
}
