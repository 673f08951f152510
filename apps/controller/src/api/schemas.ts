// The REST API schemas live in @fleet/api (packages/api), shared with the CLI and the dashboard;
// the controller's modules import them from here.
export * from '@fleet/api';
