// Type-checked by scripts/test-sdks.sh against the installed package (tsc --noEmit --strict):
// proves the shipped .d.ts describe the API as a TypeScript user calls it.
import { Client, HandlerError, SundialError, Trigger, Worker, type Job, type Run, type RunContext } from "sundial";

interface Email {
  to: string;
}

async function main(): Promise<void> {
  const client = new Client("http://127.0.0.1:7070", { token: "t" });
  const job: Job = await client.submit("send-email", { to: "a@b.c" }, {
    triggers: [Trigger.cron("0 9 * * MON-FRI", { timezone: "Europe/Berlin" }), Trigger.interval(15_000)],
    retry: { max_attempts: 3 },
    timeout: "30s",
  });
  const page = await client.listRuns({ job_id: job.id, state: "pending" });
  const run: Run = await client.waitForRun(page.items[0].id, { timeout: 10_000 });
  if (run.state === "failed") await client.retry(run.id);
  try {
    await client.getJob("default/nightly");
  } catch (e) {
    if (e instanceof SundialError && e.status === 404) console.log(e.code, e.message);
  }

  const worker = new Worker("http://127.0.0.1:7070", { capacity: 8, token: "t" });
  worker.handler<Email>("send-email", async (ctx: RunContext<Email>) => {
    if (!ctx.payload.to) throw new HandlerError("payload.to: missing", { output: { partial: true } });
    await fetch("https://example.invalid", { signal: ctx.signal });
    return { sent_to: ctx.payload.to, attempt: ctx.attempt, stopped: ctx.stopReason };
  });
  worker.handler(
    "report",
    class {
      run(ctx: RunContext): number {
        return ctx.isCancelled() ? 0 : 1;
      }
    },
  );
  await worker.run();
}

void main;
