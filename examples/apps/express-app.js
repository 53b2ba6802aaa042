// An Express 5 app that knows nothing of quiesce: it calls app.listen(PORT) and that is all.
//   quiesce run --listen 8080 --workers 2 -- node examples/apps/express-app.js
// `/slow?ms=N` answers after N ms (a request still in flight when a reload or stop comes).
import express from 'express';

const app = express();
app.get('/', (_req, res) => {
  res.type('text/plain').send(`hello from ${process.pid}\n`);
});
app.get('/slow', (req, res) => {
  setTimeout(
    () => res.type('text/plain').send(`slow from ${process.pid}\n`),
    Number(req.query.ms ?? 1000),
  );
});
const port = Number(process.env.PORT ?? 8080);
app.listen(port, () => console.log(`express app ${process.pid} listening on ${port}`));
