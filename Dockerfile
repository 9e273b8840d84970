# utilmeta-proxy: one node at the cluster edge, running the compiled JavaScript.
# Debian bookworm (glibc) so the bundled uWebSockets.js binary loads; otherwise the
# node:http listener is used automatically.
ARG NODE_IMAGE=node:20.20-bookworm-slim

# ---- build: dev dependencies, tsc to dist/, the web console to console/dist ----
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts ./scripts
COPY src ./src
COPY console ./console
RUN npm run build

# ---- runtime: production dependencies, dist/, the launcher ----
FROM ${NODE_IMAGE} AS runtime
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
# uWebSockets.js ships its addon for every platform and Node ABI (~90 MB); keep this one's.
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force && rm -rf /root/.npm /tmp/* \
 && keep="uws_$(node -p 'process.platform + "_" + process.arch + "_" + process.versions.modules').node" \
 && test -f "node_modules/uWebSockets.js/binaries/$keep" \
 && find node_modules/uWebSockets.js/binaries -name 'uws_*.node' ! -name "$keep" -delete
COPY bin ./bin
COPY --from=build /app/dist ./dist
COPY --from=build /app/console/dist ./console/dist
COPY utilmeta-proxy.env.example ./
# Listen on all interfaces inside the container; Prometheus metrics on their own port.
# DATA_DIR is the only place the node writes (the embedded database, used only when
# UTILMETA_PROXY_DB_HOST is unset), so the root filesystem can be read-only.
ENV UTILMETA_PROXY_BIND_HOST=0.0.0.0 \
    UTILMETA_PROXY_BIND_PORT=8888 \
    UTILMETA_PROXY_METRICS_HOST=0.0.0.0 \
    UTILMETA_PROXY_METRICS_PORT=9464 \
    UTILMETA_PROXY_DATA_DIR=/data \
    UTILMETA_PROXY_LOG_LEVEL=info
RUN mkdir -p /data && chown 1000:1000 /data
VOLUME /data
# The image's `node` user by uid, so Kubernetes can verify runAsNonRoot.
USER 1000:1000
EXPOSE 8888 9464
# The CLI drains and closes on SIGTERM (and SIGINT).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.UTILMETA_PROXY_BIND_PORT||8888)+'/api/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "bin/utilmeta-proxy.js"]
CMD ["start"]
