// Original file: fleet/v1/worker.proto

import type { Welcome as _fleet_v1_Welcome, Welcome__Output as _fleet_v1_Welcome__Output } from '../../fleet/v1/Welcome';
import type { DesiredState as _fleet_v1_DesiredState, DesiredState__Output as _fleet_v1_DesiredState__Output } from '../../fleet/v1/DesiredState';
import type { Ping as _fleet_v1_Ping, Ping__Output as _fleet_v1_Ping__Output } from '../../fleet/v1/Ping';
import type { SessionOpen as _fleet_v1_SessionOpen, SessionOpen__Output as _fleet_v1_SessionOpen__Output } from '../../fleet/v1/SessionOpen';
import type { SessionCancel as _fleet_v1_SessionCancel, SessionCancel__Output as _fleet_v1_SessionCancel__Output } from '../../fleet/v1/SessionCancel';
import type { LeaseRenewal as _fleet_v1_LeaseRenewal, LeaseRenewal__Output as _fleet_v1_LeaseRenewal__Output } from '../../fleet/v1/LeaseRenewal';

export interface ControllerMessage {
  'welcome'?: (_fleet_v1_Welcome | null);
  'desiredState'?: (_fleet_v1_DesiredState | null);
  'ping'?: (_fleet_v1_Ping | null);
  'sessionOpen'?: (_fleet_v1_SessionOpen | null);
  'sessionCancel'?: (_fleet_v1_SessionCancel | null);
  'lease'?: (_fleet_v1_LeaseRenewal | null);
  'payload'?: "welcome"|"desiredState"|"ping"|"sessionOpen"|"sessionCancel"|"lease";
}

export interface ControllerMessage__Output {
  'welcome'?: (_fleet_v1_Welcome__Output | null);
  'desiredState'?: (_fleet_v1_DesiredState__Output | null);
  'ping'?: (_fleet_v1_Ping__Output | null);
  'sessionOpen'?: (_fleet_v1_SessionOpen__Output | null);
  'sessionCancel'?: (_fleet_v1_SessionCancel__Output | null);
  'lease'?: (_fleet_v1_LeaseRenewal__Output | null);
  'payload'?: "welcome"|"desiredState"|"ping"|"sessionOpen"|"sessionCancel"|"lease";
}
