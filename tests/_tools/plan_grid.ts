/**
 * `deno task plan-grid`: migrates every workload of the planner's grid for
 * real and prints the model's prediction next to what happened, as the
 * Markdown table the README shows.
 */
import { formatGrid, runGrid } from "../_helpers/plan_grid.ts";

// deno-lint-ignore no-console
console.log(formatGrid(await runGrid()));
