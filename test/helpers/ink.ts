/** Minimal stdout/stdin doubles for mounting a real Ink app in tests. */
import { EventEmitter } from 'node:events';

export class FakeStdout extends EventEmitter {
  frames: string[] = [];
  constructor(
    private readonly rowCount = 40,
    private readonly columnCount = 120,
  ) {
    super();
  }
  isTTY = true;
  get columns(): number {
    return this.columnCount;
  }
  get rows(): number {
    return this.rowCount;
  }
  write = (s: string, cb?: () => void): boolean => {
    this.frames.push(s);
    if (typeof cb === 'function') cb();
    return true;
  };
}
export class FakeStdin extends EventEmitter {
  isTTY = true;
  data: string | null = null;
  setEncoding(): void {}
  setRawMode(): void {}
  resume(): void {}
  pause(): void {}
  ref(): void {}
  unref(): void {}
  read = (): string | null => {
    const d = this.data;
    this.data = null;
    return d;
  };
  press(s: string): void {
    this.data = s;
    this.emit('readable');
    this.emit('data', s);
  }
}
