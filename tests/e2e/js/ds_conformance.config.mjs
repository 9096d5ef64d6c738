// vitest settings for ds_conformance.test.mjs (run with --config): that file only, and a per-test
// limit that a loaded 2-core CI machine stays within (the suite's default is 5 s).
import { defineConfig } from "vitest/config"

export default defineConfig({ test: { include: ["ds_conformance.test.mjs"], testTimeout: 30_000 } })
