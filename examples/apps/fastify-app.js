// A Fastify 5 app that knows nothing of quiesce: it calls fastify.listen({ port }) and that is all.
//   quiesce run --listen 8080 --workers 2 -- node examples/apps/fastify-app.js
import Fastify from 'fastify';

const app = Fastify();
app.get('/', async () => `hello from ${process.pid}\n`);
app.get('/slow', async (req) => {
  const ms = Number(/** @type {{ ms?: string }} */ (req.query).ms ?? 1000);
  await new Promise((r) => setTimeout(r, ms));
  return `slow from ${process.pid}\n`;
});
const port = Number(process.env.PORT ?? 8080);
await app.listen({ port, host: process.env.HOST ?? '127.0.0.1' });
console.log(`fastify app ${process.pid} listening on ${port}`);
