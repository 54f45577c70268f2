// The engine's Web Worker script: started by createGenerator({ worker: true }); it exports nothing.
export {};
