/**
 * The browse tree of one connection: catalogs → schemas → tables → columns.
 *
 * Lazy: a level is fetched when its parent is first expanded. A level of any size
 * stays cheap to render: children are shown a page at a time ("show more") and a
 * filter keeps only matching names (and the ancestors of loaded matches). A node
 * whose expansion needs consent waits in `pending` and expands by itself after
 * `retryPending()` (called when the consent flow completes).
 */

import { Emitter } from './emitter';
import { ApiError, BrowseAnswer, BrowseItem, IConsentRequired } from './types';

export type NodeKind = 'root' | 'catalog' | 'schema' | 'table' | 'column';
const KINDS: NodeKind[] = ['root', 'catalog', 'schema', 'table', 'column'];

export type LoadState = 'idle' | 'loading' | 'loaded' | 'error' | 'consent';

export class TreeNode {
  expanded = false;
  state: LoadState = 'idle';
  children: TreeNode[] | null = null;
  error: ApiError | null = null;
  shown: number;
  readonly lname: string;

  constructor(
    readonly path: string[],
    readonly kind: NodeKind,
    readonly type: string | null = null,
    readonly nullable: boolean | null = null,
    pageSize = 200
  ) {
    this.lname = this.name.toLowerCase();
    this.shown = pageSize;
  }

  get name(): string {
    return this.path[this.path.length - 1] ?? '';
  }

  get key(): string {
    return this.path.map(encodeURIComponent).join('/');
  }

  get expandable(): boolean {
    return this.kind !== 'column';
  }
}

export type Row =
  | { kind: 'node'; node: TreeNode; depth: number }
  | { kind: 'more'; parent: TreeNode; depth: number; remaining: number }
  | { kind: 'loading'; parent: TreeNode; depth: number }
  | { kind: 'empty'; parent: TreeNode; depth: number }
  | { kind: 'error'; parent: TreeNode; depth: number; error: ApiError }
  | { kind: 'consent'; parent: TreeNode; depth: number };

export type Loader = (path: string[]) => Promise<BrowseAnswer>;

export class BrowseTree {
  readonly root: TreeNode;
  readonly changed = new Emitter();
  /** Nodes whose expansion waits for consent (by key). */
  readonly pending = new Map<string, TreeNode>();
  /** Called when a level needs consent; the owner shows the Authorize notification. */
  onConsent: ((answer: IConsentRequired, node: TreeNode) => void) | null = null;
  private _filter = '';

  constructor(
    readonly connection: string,
    private readonly load: Loader,
    readonly pageSize = 200
  ) {
    this.root = new TreeNode([], 'root', null, null, pageSize);
  }

  get filter(): string {
    return this._filter;
  }

  setFilter(text: string): void {
    this._filter = text.trim().toLowerCase();
    this.changed.emit();
  }

  /** Find a loaded node by path. */
  find(path: string[]): TreeNode | null {
    let node: TreeNode | undefined = this.root;
    for (const part of path) {
      node = node.children?.find(c => c.name === part);
      if (!node) {
        return null;
      }
    }
    return node;
  }

  async toggle(node: TreeNode): Promise<void> {
    if (node.expanded) {
      this.collapse(node);
    } else {
      await this.expand(node);
    }
  }

  collapse(node: TreeNode): void {
    node.expanded = false;
    this.pending.delete(node.key);
    this.changed.emit();
  }

  /** Expand a node, fetching its children the first time (or after an error). */
  async expand(node: TreeNode, opts: { reload?: boolean } = {}): Promise<void> {
    if (!node.expandable) {
      return;
    }
    node.expanded = true;
    if (node.state === 'loading' || (node.state === 'loaded' && !opts.reload)) {
      this.changed.emit();
      return;
    }
    node.state = 'loading';
    node.error = null;
    this.changed.emit();
    let answer: BrowseAnswer;
    try {
      answer = await this.load(node.path);
    } catch (err) {
      node.state = 'error';
      node.error = ApiError.from(err);
      this.changed.emit();
      return;
    }
    if (answer.status === 'consent_required') {
      node.state = 'consent';
      this.pending.set(node.key, node);
      this.changed.emit();
      this.onConsent?.(answer, node);
      return;
    }
    const kind = KINDS[KINDS.indexOf(node.kind) + 1];
    node.children = (answer.items || []).map((item: BrowseItem) =>
      typeof item === 'string'
        ? new TreeNode([...node.path, item], kind, null, null, this.pageSize)
        : new TreeNode(
            [...node.path, item.name],
            kind,
            item.type ?? null,
            item.nullable ?? null,
            this.pageSize
          )
    );
    node.state = 'loaded';
    node.shown = this.pageSize;
    this.pending.delete(node.key);
    this.changed.emit();
  }

  /** After consent: expand again every node that was waiting (the user sees it open). */
  async retryPending(): Promise<void> {
    const waiting = [...this.pending.values()];
    this.pending.clear();
    // Shallow first, so a parent's children exist before a child reloads.
    waiting.sort((a, b) => a.path.length - b.path.length);
    for (const node of waiting) {
      if (node.expanded) {
        await this.expand(node);
      }
    }
  }

  /** Forget everything below the root (after a revoke or an edit). */
  reset(): void {
    this.root.children = null;
    this.root.expanded = false;
    this.root.state = 'idle';
    this.root.error = null;
    this.pending.clear();
    this.changed.emit();
  }

  showMore(node: TreeNode): void {
    node.shown += this.pageSize;
    this.changed.emit();
  }

  /** The visible rows, flattened in display order. Root is not a row itself. */
  rows(): Row[] {
    const out: Row[] = [];
    const f = this._filter;
    const memo = new Map<TreeNode, boolean>();
    // A node is visible when it matches or a loaded descendant does; below a match,
    // everything shows.
    const matches = (n: TreeNode): boolean => {
      let hit = memo.get(n);
      if (hit === undefined) {
        hit = n.lname.includes(f) || (n.children?.some(matches) ?? false);
        memo.set(n, hit);
      }
      return hit;
    };
    const walk = (node: TreeNode, depth: number, filtering: boolean): void => {
      if (node.state === 'loading') {
        out.push({ kind: 'loading', parent: node, depth });
        return;
      }
      if (node.state === 'error' && node.error) {
        out.push({ kind: 'error', parent: node, depth, error: node.error });
        return;
      }
      if (node.state === 'consent') {
        out.push({ kind: 'consent', parent: node, depth });
        return;
      }
      const children = node.children ?? [];
      const visible = filtering ? children.filter(matches) : children;
      if (node.state === 'loaded' && visible.length === 0) {
        out.push({ kind: 'empty', parent: node, depth });
        return;
      }
      const limit = Math.min(visible.length, node.shown);
      for (let i = 0; i < limit; i++) {
        const child = visible[i];
        out.push({ kind: 'node', node: child, depth });
        if (child.expanded) {
          walk(child, depth + 1, filtering && !child.lname.includes(f));
        }
      }
      if (visible.length > limit) {
        out.push({ kind: 'more', parent: node, depth, remaining: visible.length - limit });
      }
    };
    if (this.root.expanded) {
      walk(this.root, 0, f !== '');
    }
    return out;
  }
}
