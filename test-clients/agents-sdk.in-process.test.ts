import { agentsSdkSuite } from './agents-sdk.suite';
import { QUEUE_MODES } from './support';

agentsSdkSuite(QUEUE_MODES[1]!);
