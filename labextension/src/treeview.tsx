/** The browse tree of one connection, windowed: only the rows in view are in the DOM. */

import {
  caretDownIcon,
  caretRightIcon,
  refreshIcon,
  tableRowsIcon
} from '@jupyterlab/ui-components';
import * as React from 'react';

import { errorText } from './format';
import { BrowseTree, Row, TreeNode } from './tree';

export const ROW_HEIGHT = 24;
const OVERSCAN = 12;
const INDENT = 14;

function useTree(tree: BrowseTree): number {
  const [version, setVersion] = React.useState(0);
  React.useEffect(() => tree.changed.connect(() => setVersion(v => v + 1)), [tree]);
  return version;
}

function NodeRow(props: { tree: BrowseTree; node: TreeNode; depth: number }): JSX.Element {
  const { tree, node, depth } = props;
  const caret = node.expandable ? (
    node.expanded ? (
      <caretDownIcon.react tag="span" className="jp-ConnAuth-caret" />
    ) : (
      <caretRightIcon.react tag="span" className="jp-ConnAuth-caret" />
    )
  ) : (
    <span className="jp-ConnAuth-caret" />
  );
  const label = node.kind === 'column' ? 'column' : node.kind;
  return (
    <div
      className={`jp-ConnAuth-row jp-ConnAuth-node jp-ConnAuth-${node.kind}`}
      style={{ paddingLeft: depth * INDENT + 4 }}
      role="treeitem"
      aria-expanded={node.expandable ? node.expanded : undefined}
      aria-level={depth + 1}
      tabIndex={0}
      title={`${label}: ${node.path.join('.')}${node.type ? ` (${node.type})` : ''}`}
      data-connection={tree.connection}
      data-path={JSON.stringify(node.path)}
      data-kind={node.kind}
      onClick={() => void tree.toggle(node)}
      onKeyDown={e => {
        if (e.key === 'Enter' || e.key === ' ') {
          e.preventDefault();
          void tree.toggle(node);
        }
      }}
    >
      {caret}
      {node.kind === 'table' && (
        <tableRowsIcon.react tag="span" className="jp-ConnAuth-kindIcon" />
      )}
      <span className="jp-ConnAuth-nodeName">{node.name}</span>
      {node.type && (
        <span className="jp-ConnAuth-nodeType">
          {node.type}
          {node.nullable === false ? ' not null' : ''}
        </span>
      )}
    </div>
  );
}

type ShowError = (e: { message: string; fix?: string | null }) => void;

function renderRow(
  tree: BrowseTree,
  row: Row,
  i: number,
  retry: (n: TreeNode) => void,
  showError?: ShowError
) {
  const pad = { paddingLeft: row.depth * INDENT + 22 };
  switch (row.kind) {
    case 'node':
      return <NodeRow key={row.node.key} tree={tree} node={row.node} depth={row.depth} />;
    case 'more':
      return (
        <div key={`more:${row.parent.key}`} className="jp-ConnAuth-row" style={pad}>
          <button className="jp-ConnAuth-link" onClick={() => tree.showMore(row.parent)}>
            Show {Math.min(row.remaining, tree.pageSize)} more of {row.remaining}…
          </button>
        </div>
      );
    case 'loading':
      return (
        <div key={`loading:${row.parent.key}`} className="jp-ConnAuth-row jp-ConnAuth-dim" style={pad}>
          Loading…
        </div>
      );
    case 'empty':
      return (
        <div key={`empty:${row.parent.key}`} className="jp-ConnAuth-row jp-ConnAuth-dim" style={pad}>
          {tree.filter ? 'No match' : 'Empty'}
        </div>
      );
    case 'consent':
      return (
        <div key={`consent:${row.parent.key}`} className="jp-ConnAuth-row jp-ConnAuth-warn" style={pad}>
          Waiting for your consent…
        </div>
      );
    case 'error':
      return (
        <div
          key={`error:${row.parent.key}`}
          className="jp-ConnAuth-row jp-ConnAuth-error jp-ConnAuth-rowError"
          style={pad}
          title={errorText(row.error)}
        >
          <span className="jp-ConnAuth-rowErrorText">{errorText(row.error)}</span>
          {showError && (
            <button
              className="jp-ConnAuth-link"
              title="Show the whole message and its fix above"
              onClick={() => showError(row.error)}
            >
              Details
            </button>
          )}
          <button className="jp-ConnAuth-link" onClick={() => retry(row.parent)}>
            Retry
          </button>
        </div>
      );
  }
  return <div key={i} />;
}

/** ``showError``: a level's error (one line in the tree) in full, with its fix. */
export function TreeView(props: { tree: BrowseTree; showError?: ShowError }): JSX.Element {
  const { tree, showError } = props;
  useTree(tree);
  const [scrollTop, setScrollTop] = React.useState(0);
  const [height, setHeight] = React.useState(400);
  const box = React.useRef<HTMLDivElement>(null);
  React.useEffect(() => {
    if (!tree.root.expanded) {
      void tree.expand(tree.root);
    }
  }, [tree]);
  React.useLayoutEffect(() => {
    if (box.current && box.current.clientHeight) {
      setHeight(box.current.clientHeight);
    }
  });
  const rows = tree.rows();
  const rootRow = rows.length === 0 ? null : rows;
  const first = Math.max(0, Math.floor(scrollTop / ROW_HEIGHT) - OVERSCAN);
  const last = Math.min(rows.length, Math.ceil((scrollTop + height) / ROW_HEIGHT) + OVERSCAN);
  const retry = (n: TreeNode) => void tree.expand(n, { reload: true });
  return (
    <div className="jp-ConnAuth-tree">
      <div className="jp-ConnAuth-treeTools">
        <input
          className="jp-ConnAuth-filter jp-mod-styled"
          type="search"
          placeholder="Filter"
          title="Filter the names loaded so far"
          aria-label={`Filter ${tree.connection}`}
          defaultValue={tree.filter}
          onChange={e => tree.setFilter(e.currentTarget.value)}
        />
        <button
          className="jp-ConnAuth-iconButton"
          title="Reload the catalogs"
          onClick={() => {
            tree.reset();
            void tree.expand(tree.root, { reload: true });
          }}
        >
          <refreshIcon.react tag="span" />
        </button>
      </div>
      <div
        className="jp-ConnAuth-treeRows"
        role="tree"
        ref={box}
        onScroll={e => setScrollTop(e.currentTarget.scrollTop)}
      >
        {!tree.root.expanded ? (
          <div className="jp-ConnAuth-row">
            <button className="jp-ConnAuth-link" onClick={() => void tree.expand(tree.root)}>
              Load the catalogs
            </button>
          </div>
        ) : rootRow === null ? (
          <div className="jp-ConnAuth-row jp-ConnAuth-dim">Nothing to show</div>
        ) : (
          <div style={{ height: rows.length * ROW_HEIGHT, position: 'relative' }}>
            <div style={{ position: 'absolute', top: first * ROW_HEIGHT, left: 0, right: 0 }}>
              {rows.slice(first, last).map((row, i) => renderRow(tree, row, first + i, retry, showError))}
            </div>
          </div>
        )}
      </div>
    </div>
  );
}
