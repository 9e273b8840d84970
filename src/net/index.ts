export { normalizeIp, isPrivateIp, clientIp, requestClientIp, sameIp, type PeerSource } from './ip.ts';
