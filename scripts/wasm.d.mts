// Types of scripts/wasm.mjs (used by test/unit/core/wasm.test.ts).
export declare const SOURCE: string;
export declare const TARGET: string;
export declare const FLAGS: string[];
export declare function compileKernels(): Promise<Uint8Array>;
export declare function generatedSource(binary: Uint8Array): string;
