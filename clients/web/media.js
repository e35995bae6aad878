// Images, files and videos in messages: a preview made before upload, the
// upload's progress with pause/resume/cancel on the sender's page, and the
// download (images at once, files on demand) with progress and pause/resume.

import { explain, formatSize, h, toast } from './dom.js';

/** Largest preview the server takes (16 KiB of data URL). */
const PREVIEW_LIMIT = 16 * 1024;
/** Images up to this size are downloaded as soon as they are shown. */
const AUTO_DOWNLOAD = 25 * 1024 * 1024;

/**
 * A small JPEG thumbnail of an image file as a data URL under 16 KiB, or
 * undefined when the browser cannot decode it.
 * @param {Blob} file @returns {Promise<string | undefined>}
 */
export async function imagePreview(file) {
  try {
    const bitmap = await createImageBitmap(file);
    for (const [edge, quality] of [[160, 0.7], [120, 0.6], [80, 0.5], [48, 0.4]]) {
      const scale = Math.min(1, edge / Math.max(bitmap.width, bitmap.height));
      const canvas = document.createElement('canvas');
      canvas.width = Math.max(1, Math.round(bitmap.width * scale));
      canvas.height = Math.max(1, Math.round(bitmap.height * scale));
      canvas.getContext('2d')?.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      const url = canvas.toDataURL('image/jpeg', quality);
      if (url.length <= PREVIEW_LIMIT) return url;
    }
  } catch {
    // not an image the browser can read: no preview
  }
  return undefined;
}

/** Downloads done or under way on this page, by upload id. @type {Map<string, any>} */
const downloads = new Map();

/**
 * The media part of a message bubble.
 * @param {import('./main.js').App} app
 * @param {{kind: string, body?: string, media?: any, upload_id?: string, preview?: string}} message
 */
export function mediaView(app, message) {
  const media = message.media ?? { upload_id: message.upload_id, preview: message.preview, state: 'uploading', name: '', size: 0 };
  const uploadId = media.upload_id;
  const upload = app.uploads.get(uploadId);
  const box = h('div', { class: `media ${message.kind}`, 'data-test': 'media', 'data-state': media.state });
  const status = h('div', { class: 'media-status' });

  if (message.kind === 'image') {
    const img = h('img', { alt: media.name || 'image', 'data-test': 'image', class: 'preview-img' });
    if (media.preview) img.setAttribute('src', media.preview);
    box.append(img);
    if (upload) {
      // Our own picture: the file is here already.
      img.setAttribute('src', blobUrl(uploadId, upload.blob));
      img.classList.remove('preview-img');
      img.setAttribute('data-test', 'image-full');
    } else if (media.state === 'uploaded' && media.size <= AUTO_DOWNLOAD) {
      fetchFull(app, uploadId).done.then((/** @type {Blob} */ blob) => {
        img.setAttribute('src', blobUrl(uploadId, blob));
        img.classList.remove('preview-img');
        img.setAttribute('data-test', 'image-full');
      }, () => {});
    }
  } else {
    box.append(h('div', { class: 'file-card' },
      h('span', { class: 'file-icon', 'aria-hidden': 'true' }, fileLabel(media.name || upload?.blob?.name, message.kind)),
      h('div', {},
        h('div', { class: 'file-name', 'data-test': 'file-name' }, media.name || upload?.blob?.name || 'file'),
        h('div', { class: 'muted' }, formatSize(media.size || upload?.blob?.size || 0)))));
  }
  box.append(status);

  if (upload && upload.state !== 'completed') {
    status.append(uploadControls(upload));
  } else if (upload) {
    status.append(h('span', { class: 'muted', 'data-test': 'upload-state' }, media.state === 'failed' ? 'upload failed' : 'uploaded'));
  } else if (media.state === 'failed') {
    status.append(h('span', { class: 'error' }, 'upload failed'));
  } else if (media.state === 'uploading') {
    status.append(h('span', { class: 'muted' }, 'uploading…'));
  } else if (message.kind !== 'image') {
    status.append(downloadControls(app, media, message.kind));
  }
  return box;
}

/** Progress and buttons of an upload under way on this page. @param {any} upload */
export function uploadControls(upload) {
  const bar = h('progress', { max: upload.blob.size, value: upload.ackedBytes, 'data-test': 'upload-progress' });
  const label = h('span', { class: 'muted', 'data-test': 'upload-state' });
  const pause = h('button', { class: 'small', 'data-test': 'upload-pause', onclick: () => upload.pause() }, 'Pause');
  const resume = h('button', { class: 'small', 'data-test': 'upload-resume', onclick: () => upload.resume() }, 'Resume');
  const cancel = h('button', { class: 'small', 'data-test': 'upload-cancel', onclick: () => upload.cancel().catch((/** @type {any} */ e) => toast(explain(e), 'error')) }, 'Cancel');
  const box = h('div', { class: 'transfer-controls' }, bar, label, pause, resume, cancel);
  const render = () => {
    bar.value = upload.ackedBytes;
    const pct = upload.blob.size ? Math.floor((100 * upload.ackedBytes) / upload.blob.size) : 0;
    label.textContent = { hashing: 'preparing…', uploading: `${pct}%`, paused: `paused at ${pct}%`, completing: 'checking…', completed: 'uploaded', failed: 'failed', cancelled: 'cancelled' }[/** @type {string} */ (upload.state)] ?? upload.state;
    box.dataset.state = upload.state;
    pause.hidden = !['uploading', 'hashing'].includes(upload.state);
    resume.hidden = upload.state !== 'paused';
    cancel.hidden = ['completed', 'failed', 'cancelled'].includes(upload.state);
  };
  upload.on('progress', render);
  upload.on('state', render);
  render();
  return box;
}

/** A completed file's download button, progress, pause/resume, then a save link.
 * @param {import('./main.js').App} app @param {any} media @param {string} kind */
function downloadControls(app, media, kind) {
  const box = h('div', { class: 'transfer-controls' });
  const existing = downloads.get(media.upload_id);
  const start = () => {
    const download = fetchFull(app, media.upload_id);
    showDownload(box, download, media, kind);
  };
  if (existing) {
    showDownload(box, existing, media, kind);
  } else {
    box.append(h('button', { class: 'small', 'data-test': 'download', onclick: start }, `Download (${formatSize(media.size)})`));
  }
  return box;
}

/** @param {HTMLElement} box @param {any} download @param {any} media @param {string} kind */
function showDownload(box, download, media, kind) {
  const bar = h('progress', { max: media.size, value: download.received, 'data-test': 'download-progress' });
  const label = h('span', { class: 'muted', 'data-test': 'download-state' });
  const pause = h('button', { class: 'small', 'data-test': 'download-pause', onclick: () => download.pause() }, 'Pause');
  const resume = h('button', { class: 'small', 'data-test': 'download-resume', onclick: () => download.resume() }, 'Resume');
  box.replaceChildren(bar, label, pause, resume);
  const render = () => {
    bar.value = download.received;
    const pct = media.size ? Math.floor((100 * download.received) / media.size) : 0;
    label.textContent = download.state === 'paused' ? `paused at ${pct}%` : download.state === 'failed' ? 'failed' : `${pct}%`;
    box.dataset.state = download.state;
    pause.hidden = download.state !== 'downloading';
    resume.hidden = download.state !== 'paused';
  };
  download.on('progress', render);
  download.on('state', render);
  render();
  download.done.then((/** @type {Blob} */ blob) => {
    const url = blobUrl(media.upload_id, blob);
    box.replaceChildren(
      ...(kind === 'video' ? [h('video', { src: url, controls: true, class: 'video' })] : []),
      h('a', { href: url, download: media.name || 'file', class: 'button small', 'data-test': 'save' }, 'Save'),
      h('span', { class: 'muted', 'data-test': 'download-state' }, 'downloaded'));
    box.dataset.state = 'completed';
  }, (/** @type {any} */ e) => {
    if (e?.code !== 'aborted') label.textContent = `failed: ${explain(e)}`;
  });
}

/** One download per upload on this page, shared by every bubble that shows it.
 * @param {import('./main.js').App} app @param {string} uploadId */
function fetchFull(app, uploadId) {
  let download = downloads.get(uploadId);
  if (!download || download.state === 'failed') {
    download = app.client.download(uploadId);
    downloads.set(uploadId, download);
  }
  return download;
}

/** A file's extension as its icon ("PDF"), or what it is. @param {string | undefined} name @param {string} kind */
function fileLabel(name, kind) {
  const ext = /\.([a-z0-9]{1,4})$/i.exec(name ?? '')?.[1];
  return ext ? ext.toUpperCase() : kind === 'video' ? 'VIDEO' : 'FILE';
}

/** @type {Map<string, string>} */
const urls = new Map();
/** @param {string} uploadId @param {Blob} blob */
function blobUrl(uploadId, blob) {
  let url = urls.get(uploadId);
  if (!url) {
    url = URL.createObjectURL(blob);
    urls.set(uploadId, url);
  }
  return url;
}
