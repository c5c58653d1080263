/**
 * jupyter-connauth's JupyterLab extension: the "Connections" sidebar.
 *
 * Per-user status of every connection the broker knows, Authorize / Test / Revoke,
 * the connection form, and a browse tree that asks for consent when a level needs it.
 */

import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { Clipboard, ICommandPalette, Notification } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';

import { BrokerApi } from './api';
import { Controller } from './controller';
import { connauthIcon } from './icon';
import { ConnectionsPanel } from './panel';
import { qualifiedName, queryCell } from './sql';
import { ConnectionsModel } from './state';

export namespace CommandIDs {
  export const open = 'connauth:open';
  export const refresh = 'connauth:refresh';
  export const insertQuery = 'connauth:insert-query';
  export const copyName = 'connauth:copy-name';
}

const PANEL_ID = 'jp-connauth-connections';
const STATUS_POLL_MS = 5000;
const FOCUS_REFRESH_MS = 2000;

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-connauth:sidebar',
  description: 'Connections sidebar: per-user OAuth status, consent, test and browse.',
  autoStart: true,
  optional: [ILayoutRestorer, ICommandPalette, INotebookTracker],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null,
    notebooks: INotebookTracker | null
  ): void => {
    const model = new ConnectionsModel(new BrokerApi(app.serviceManager.serverSettings));
    const controller = new Controller(model);
    const panel = new ConnectionsPanel(controller);
    panel.id = PANEL_ID;
    panel.title.icon = connauthIcon;
    panel.title.caption = 'Connections';
    app.shell.add(panel, 'left', { rank: 850 });
    restorer?.add(panel, 'connauth-connections');

    void model.refresh();
    // What another tab or a kernel (a magic's consent or revoke) changed shows by itself
    // while the panel is open: one small GET every few seconds, none when hidden.
    model.pollStatuses(STATUS_POLL_MS, () => !document.hidden && panel.isVisible);

    // The callback page tells its opener (this window) how the flow ended.
    window.addEventListener('message', event => {
      if (event.origin !== window.location.origin) {
        return;
      }
      void model.handleMessage(event.data);
    });
    // Otherwise (callback on another origin, popup closed early, a flow finished in
    // a notebook's balloon): refresh when the user comes back to this window.
    let last = 0;
    window.addEventListener('focus', () => {
      const now = Date.now();
      if (now - last > FOCUS_REFRESH_MS) {
        last = now;
        void model.refresh();
      }
    });

    const { commands } = app;
    const tableAt = (): { connection: string; path: string[] } | null => {
      const node = app.contextMenuHitTest(n => n.dataset.kind === 'table');
      if (!node || !node.dataset.connection || !node.dataset.path) {
        return null;
      }
      return { connection: node.dataset.connection, path: JSON.parse(node.dataset.path) };
    };

    commands.addCommand(CommandIDs.open, {
      label: 'Show Connections',
      icon: connauthIcon,
      execute: () => app.shell.activateById(PANEL_ID)
    });
    commands.addCommand(CommandIDs.refresh, {
      label: 'Refresh Connections',
      execute: () => model.refresh()
    });
    commands.addCommand(CommandIDs.insertQuery, {
      label: 'Insert Query Cell (SELECT … LIMIT 100)',
      execute: args => {
        const target =
          (args.connection as string | undefined) && Array.isArray(args.path)
            ? { connection: args.connection as string, path: args.path as string[] }
            : tableAt();
        if (!target) {
          return;
        }
        const nb = notebooks?.currentWidget;
        if (!nb) {
          Notification.warning('Open a notebook first: the query cell goes into it.', {
            autoClose: 4000
          });
          return;
        }
        const connector = model.get(target.connection)?.connector;
        const source = queryCell(target.connection, connector, target.path);
        const cell = nb.content.activeCell;
        if (cell && cell.model.sharedModel.getSource().trim() === '') {
          cell.model.sharedModel.setSource(source);
        } else {
          NotebookActions.insertBelow(nb.content);
          nb.content.activeCell?.model.sharedModel.setSource(source);
        }
        app.shell.activateById(nb.id);
        nb.content.activeCell?.node.scrollIntoView({ block: 'nearest' });
      }
    });
    commands.addCommand(CommandIDs.copyName, {
      label: 'Copy Qualified Name',
      execute: args => {
        const target =
          (args.connection as string | undefined) && Array.isArray(args.path)
            ? { connection: args.connection as string, path: args.path as string[] }
            : tableAt();
        if (!target) {
          return;
        }
        const connector = model.get(target.connection)?.connector;
        Clipboard.copyToSystem(qualifiedName(connector, target.path));
      }
    });
    app.contextMenu.addItem({
      command: CommandIDs.insertQuery,
      selector: '.jp-ConnAuth-table',
      rank: 1
    });
    app.contextMenu.addItem({
      command: CommandIDs.copyName,
      selector: '.jp-ConnAuth-table',
      rank: 2
    });
    if (palette) {
      palette.addItem({ command: CommandIDs.open, category: 'Connections' });
      palette.addItem({ command: CommandIDs.refresh, category: 'Connections' });
    }
  }
};

export default plugin;
