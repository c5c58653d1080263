import { LabIcon } from '@jupyterlab/ui-components';

// A database cylinder with a key: "connections you sign in to".
const svg = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16">
<g class="jp-icon3" fill="#616161">
<path d="M10 2C5.6 2 2 3.3 2 5v12c0 1.7 3.6 3 8 3 .7 0 1.4 0 2-.1v-2c-.6.1-1.3.1-2 .1-3.9 0-6-1.1-6-1.4v-2.3c1.5.7 3.7 1.1 6 1.1.7 0 1.4 0 2-.1v-2c-.6.1-1.3.1-2 .1-3.9 0-6-1.1-6-1.4V8.6C5.5 9.5 7.7 10 10 10s4.5-.5 6-1.4V10h2V5c0-1.7-3.6-3-8-3zm0 6C6.1 8 4 6.9 4 6.6V5.4C4 5.1 6.1 4 10 4s6 1.1 6 1.4v1.2C16 6.9 13.9 8 10 8z"/>
<path d="M18.5 11a3.5 3.5 0 0 0-3.4 4.4L12 18.5V22h3v-1.5h1.5V19h1.2l.6-.6A3.5 3.5 0 1 0 18.5 11zm.5 3a1 1 0 1 1 0-2 1 1 0 0 1 0 2z"/>
</g></svg>`;

export const connauthIcon = new LabIcon({ name: 'jupyter-connauth:connections', svgstr: svg });
