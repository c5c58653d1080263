/** The broker API through Jupyter's ServerConnection (auth and XSRF handled there). */

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import {
  ApiError,
  BrowseAnswer,
  IBrokerApi,
  IConnectionStatus,
  IFlow,
  IFlowStart,
  IInfo,
  TestAnswer
} from './types';

export class BrokerApi implements IBrokerApi {
  constructor(readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()) {}

  url(...parts: string[]): string {
    return URLExt.join(this.settings.baseUrl, 'connauth/api', ...parts.map(encodeURIComponent));
  }

  async request<T>(
    method: string,
    parts: string[],
    opts: { body?: unknown; raw?: string; query?: string } = {}
  ): Promise<T> {
    const init: RequestInit = { method };
    if (opts.raw !== undefined) {
      init.body = opts.raw;
      init.headers = { 'Content-Type': 'application/x-pem-file' };
    } else if (opts.body !== undefined) {
      init.body = JSON.stringify(opts.body);
    }
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(
        this.url(...parts) + (opts.query ?? ''),
        init,
        this.settings
      );
    } catch (err) {
      throw new ApiError(
        'network_error',
        `The Jupyter server did not answer: ${err instanceof Error ? err.message : String(err)}`,
        'check that the Jupyter server is running, then reload'
      );
    }
    const text = await response.text();
    let data: any = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      if (data && typeof data === 'object' && typeof data.message === 'string') {
        throw new ApiError(data.error || 'http_error', data.message, data.fix ?? null, response.status);
      }
      const fix =
        response.status === 404
          ? 'the jupyter_connauth server extension is not enabled: ' +
            'jupyter server extension enable jupyter_connauth, then restart the server'
          : null;
      throw new ApiError(
        'http_error',
        `The broker answered HTTP ${response.status} ${response.statusText}`.trim(),
        fix,
        response.status
      );
    }
    return data as T;
  }

  info(): Promise<IInfo> {
    return this.request('GET', ['info']);
  }

  async connections(): Promise<IConnectionStatus[]> {
    const data = await this.request<{ connections: IConnectionStatus[] }>('GET', ['connections']);
    return data.connections;
  }

  connection(name: string): Promise<IConnectionStatus> {
    return this.request('GET', ['connections', name]);
  }

  create(body: Record<string, unknown>): Promise<IConnectionStatus> {
    return this.request('POST', ['connections'], { body });
  }

  update(name: string, body: Record<string, unknown>): Promise<IConnectionStatus> {
    return this.request('PUT', ['connections', name], { body });
  }

  async remove(name: string): Promise<void> {
    await this.request('DELETE', ['connections', name]);
  }

  /** Start a consent flow; `switchAccount` accepts another IdP account than the stored one's. */
  authorize(name: string, switchAccount = false): Promise<IFlowStart> {
    const body = switchAccount ? { switch_account: true } : {};
    return this.request('POST', ['connections', name, 'authorize'], { body });
  }

  revoke(name: string): Promise<unknown> {
    return this.request('POST', ['connections', name, 'revoke'], { body: {} });
  }

  uploadPrivateKey(name: string, pem: string): Promise<unknown> {
    return this.request('PUT', ['connections', name, 'private_key'], { raw: pem });
  }

  test(name: string): Promise<TestAnswer> {
    return this.request('POST', ['connections', name, 'test'], { body: {} });
  }

  browse(name: string, path: string[]): Promise<BrowseAnswer> {
    const query = '?path=' + encodeURIComponent(path.join('/'));
    return this.request('GET', ['connections', name, 'browse'], { query });
  }

  flow(flowId: string): Promise<IFlow> {
    return this.request('GET', ['flows', flowId]);
  }
}
