// The REST API's contract, shared by the controller (validation, OpenAPI), the CLI (types and
// client-side checks) and the dashboard (forms): TypeBox schemas, the name and label syntax,
// and the VM states. Nothing here depends on the controller's code. `@fleet/api/syntax` has the
// syntax rules alone (no TypeBox).
export * from './schemas.ts';
export * from './syntax.ts';
