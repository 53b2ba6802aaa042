import { testDocExamples } from '../helpers/doc-examples.ts';

testDocExamples('docs/supervisor.md', 1);
