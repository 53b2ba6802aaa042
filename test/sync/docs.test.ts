import { testDocExamples } from '../helpers/doc-examples.ts';
import { checkLeaks } from './helpers.ts';

checkLeaks();
testDocExamples('docs/sync.md', 10);
