import { defineConfig, loadEnv } from 'vite';
import react from '@vitejs/plugin-react';

// `npm run dev` and `npm run preview` send /api/gigachat-* to the proxy, so
// the page calls it on its own origin, exactly as in production where both
// are served from one domain. Point it elsewhere with
// GIGACHAT_PROXY_URL=http://127.0.0.1:8080 npm run dev (or put it in .env.local).
export default defineConfig(({ mode }) => {
  const env = loadEnv(mode, process.cwd(), 'GIGACHAT_');
  const target = env.GIGACHAT_PROXY_URL || 'http://127.0.0.1:3000';
  const proxy = { '/api/gigachat-': { target, changeOrigin: false } };
  return {
    plugins: [react()],
    server: { proxy },
    preview: { proxy },
  };
});
