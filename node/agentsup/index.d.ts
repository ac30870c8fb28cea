export declare const AUTH_EXIT_CODE: 77;
export declare function isAuthError(err: unknown): boolean;
export declare function exitNow(err: unknown, code?: number): void;
export declare function exitOnAuthError(): undefined;
export declare function exitOnAuthError<A extends unknown[], R>(
  fn: (...args: A) => Promise<R> | R,
  options?: { code?: number },
): (...args: A) => Promise<R>;
export declare function worker(): { name: string; replica: number; replicas: number } | null;
export declare function key(name: string): string;
