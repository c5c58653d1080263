/** A minimal change signal for the pure models (React views subscribe to it). */
export class Emitter {
  private listeners = new Set<() => void>();

  connect(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => {
      this.listeners.delete(fn);
    };
  }

  emit(): void {
    for (const fn of [...this.listeners]) {
      fn();
    }
  }
}
