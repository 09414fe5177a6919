// Render at most once per animation frame: updates only mark what changed, and the frame
// callback draws each dirty view once, however many messages arrived in between.

export class FrameScheduler {
  constructor() {
    this.views = new Map();
    this.dirty = new Set();
    this.requested = false;
    this.frames = 0;
  }

  register(name, render) {
    this.views.set(name, render);
  }

  mark(...names) {
    for (const name of names) this.dirty.add(name);
    if (!this.requested) {
      this.requested = true;
      requestAnimationFrame(() => this.flush());
    }
  }

  flush() {
    this.requested = false;
    this.frames += 1;
    const names = [...this.dirty];
    this.dirty.clear();
    for (const name of names) {
      const render = this.views.get(name);
      if (!render) continue;
      try {
        render();
      } catch (error) {
        console.error(`rendering ${name} failed`, error);
      }
    }
  }
}
