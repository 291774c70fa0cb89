/**
 * The parts of npm `ext2fs` the guest lens uses: its libext2fs WebAssembly module, the C glue's
 * bindings and the heap helpers. The package ships no types. Its fs-like wrapper (lib/fs.js) is not
 * used: it assigns to constants in two functions (esbuild refuses to bundle it) and reads files as
 * UTF-8 text by default.
 */
declare module 'ext2fs/lib/libext2fs' {
  const Module: {
    calledRun?: boolean;
    onRuntimeInitialized?: () => void;
    setObject(obj: unknown): number;
    deleteObject(id: number): void;
    getBuffer(pointer: number, length: number): Buffer;
  };
  export = Module;
}
declare module 'ext2fs/lib/util' {
  export function ccallThrowAsync(name: string, returnType: string, argTypes: string[], args: number[]): Promise<number>;
  export function withHooks<A extends unknown[], R>(fn: (...args: A) => Promise<R>): (...args: A) => Promise<R>;
  export function usePath(path: string): Promise<number>;
  export function useObject<T>(obj: T): Promise<[T, number]>;
  export function useBuffer(length: number): Promise<[Buffer, number]>;
}
declare module 'ext2fs/lib/binding' {
  type Op = (...args: number[]) => Promise<number>;
  const binding: Record<'open' | 'close' | 'readdir' | 'read' | 'readlink' | 'stat_ino' | 'stat_i_mode' | 'stat_i_links_count' | 'stat_i_uid' | 'stat_i_gid' | 'stat_i_size' | 'stat_i_atime' | 'stat_i_mtime' | 'stat_i_ctime', Op>;
  export = binding;
}
