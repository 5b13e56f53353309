// Validate AsyncAPI documents with the AsyncAPI parser (@asyncapi/parser): one JSON file name per argument.
// Prints {"<file>": [diagnostics of severity error or warning]} and exits 1 if any document has an error.
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const parser = new Parser();
const report = {};
let failed = false;
for (const file of process.argv.slice(2)) {
  const diagnostics = await parser.validate(readFileSync(file, "utf8"));
  // severity: 0 error, 1 warning, 2 information, 3 hint
  report[file] = diagnostics
    .filter((d) => d.severity <= 1)
    .map((d) => ({ severity: d.severity, code: d.code, message: d.message, path: d.path.join("/") }));
  if (diagnostics.some((d) => d.severity === 0)) failed = true;
}
process.stdout.write(JSON.stringify(report));
process.exit(failed ? 1 : 0);
