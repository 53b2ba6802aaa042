// The Express app as PM2 and node:cluster recommend it for graceful reloads: it says when it
// is ready (process.send('ready'), PM2's wait_ready) and closes its server on SIGINT/SIGTERM.
// quiesce runs examples/apps/express-app.js instead, unmodified.
import express from 'express';

const app = express();
app.get('/', (_req, res) => {
  res.type('text/plain').send(`hello from ${process.pid}\n`);
});
const server = app.listen(Number(process.env.PORT ?? 8080), () => process.send?.('ready'));
const stop = () => {
  server.close(() => process.exit(0));
  server.closeIdleConnections();
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
