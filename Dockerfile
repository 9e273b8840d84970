# utilmeta-proxy: one node at the cluster edge.
# Debian bookworm (glibc 2.36) so the bundled uWebSockets.js binary loads;
# otherwise the node:http listener is used automatically.
FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY bin ./bin
COPY src ./src
COPY utilmeta-proxy.env.example ./
# Listen on all interfaces inside the container; keep the embedded database
# (used only when UTILMETA_PROXY_DB_HOST is unset) on a volume.
ENV UTILMETA_PROXY_BIND_HOST=0.0.0.0 \
    UTILMETA_PROXY_BIND_PORT=8888 \
    UTILMETA_PROXY_DATA_DIR=/data
RUN mkdir -p /data && chown node:node /data
VOLUME /data
USER node
EXPOSE 8888
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:8888/api/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
ENTRYPOINT ["node", "bin/utilmeta-proxy.js"]
CMD ["start"]
