export { LiveView, type ChangeFeed, type LiveViewOptions } from './view.ts';
export { pgNotifyFeed } from './pg-feed.ts';
