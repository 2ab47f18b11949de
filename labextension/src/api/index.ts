export * from './types';
export * from './transport';
export * from './client';
